"""The two errors of the expression language."""

from __future__ import annotations


class ExpressionError(ValueError):
    """The expression does not compile; `position` is the character offset of the problem (None when it is the
    whole expression, e.g. too long)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} at position {position}")
        self.problem = message
        self.position = position


class EvaluationError(ExpressionError):
    """Evaluation stopped: a bound was exceeded or a function failed. Missing data is never an error."""
