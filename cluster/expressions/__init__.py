"""The xyOps expression language (JEXL 2.3 with JavaScript semantics and the xyOps functions), pure code, no I/O.

    expr = compile_expression("monitors.load_avg >= (cpu.cores + 1)")   # cached; ExpressionError with position
    expr.evaluate(server_data)                                            # -> True
    render_template("Load: {{float(monitors.load_avg)}}", server_data)    # `{{ }}` placeholders
    server_filter("userData.rack == 3")(server_record)                    # event target expressions

Modules: `lexer`, `parser` (syntax tree, compile-time bounds), `compiler` (closures, evaluation bounds),
`values` (JavaScript semantics), `functions` (min, max, bytes, pct, match, ...), `templates`, `syntax` (the
check the API uses), `servers` (target expressions).
"""

from __future__ import annotations

from .compiler import Expression, compile_expression, evaluate
from .errors import EvaluationError, ExpressionError
from .servers import server_filter
from .syntax import check
from .templates import render as render_template
from .values import text as to_text
from .values import truthy

__all__ = ["EvaluationError", "Expression", "ExpressionError", "check", "compile_expression", "evaluate",
           "render_template", "server_filter", "to_text", "truthy"]  # fmt: skip
