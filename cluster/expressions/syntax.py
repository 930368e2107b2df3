"""The check the API runs on an expression a user saves (event `expression`, later monitor `source` and alert
`expression`): it compiles the expression with the real compiler, so what passes here also evaluates."""

from __future__ import annotations

from .compiler import compile_expression
from .errors import ExpressionError

__all__ = ["ExpressionError", "check"]


def check(text: str) -> None:
    """Raise ExpressionError (with the position) unless `text` compiles."""
    compile_expression(text)
