"""Expressions users write (pure code, no I/O): JEXL syntax checks (`syntax`) and `{{ }}` templates (`templates`)."""

from __future__ import annotations

from .syntax import ExpressionError, check

__all__ = ["ExpressionError", "check"]
