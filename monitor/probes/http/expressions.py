"""CEL assertions and RFC 9535 JSONPath extraction, compiled once at config load, with bounds.

Libraries chosen by measurement (tests/perf/checks_libs.py, docs "performance"): CEL is
Google's cel-cpp runtime (`cel-expr-python`: no Python eval, an iteration budget of its
own, errors with line:column), JSONPath is `jsonpath-rfc9535`. What the libraries do not
bound is bounded here: the size and depth of the JSON handed to them, the text, and what
an extraction may keep.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cel_expr_python.cel import Env

# The CEL context of an assertion (names are the contract; all dynamic, like blackbox's CEL).
VARIABLES = ("status", "headers", "body", "text", "duration_ms", "vars")
MAX_JSON_VALUES = 20_000  # values (objects, arrays, scalars) of a body handed to CEL or JSONPath
MAX_JSON_DEPTH = 64
MAX_TEXT_CHARS = 64 * 1024  # `text`: the body as a string, cut here
MAX_EXTRACT_CHARS = 4096  # one extracted value, as JSON-ish text length
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_NAMES = re.compile(r"(?<![\w.])(" + "|".join(VARIABLES) + r")\b")


@functools.cache
def _env() -> Env:
    """The CEL environment, made on the first compiled check: the runtime (~6 MB of RSS,
    with JSONPath's ~2 MB) stays out of a daemon whose config has no expressions."""
    from cel_expr_python import cel

    return cel.NewEnv(variables={name: cel.Type.DYN for name in VARIABLES})


class ExpressionError(ValueError):
    """A CEL expression or a JSONPath that does not compile: one line with the position."""


class Bindings:
    """A step's CEL context converted once for all its assertions (the body is the costly part)."""

    def __init__(self, context: Mapping[str, Any], names: frozenset[str]) -> None:
        self.activation = _env().Activation(data={k: v for k, v in context.items() if k in names})


class Assertion:
    """One compiled CEL expression; `names` are the context variables it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _env().compile(source)
        except RuntimeError as exc:
            raise ExpressionError(_cel_error(str(exc))) from None
        self.names = frozenset(_NAMES.findall(source))

    def evaluate(self, context: Mapping[str, Any] | Bindings) -> tuple[bool, str | None]:
        """(passed, why not): a false result, a non-boolean or an evaluation error all fail."""
        try:
            if isinstance(context, Bindings):
                value = self._program.eval(activation=context.activation)
            else:
                value = self._program.eval(data={k: v for k, v in context.items() if k in self.names})
        except RuntimeError as exc:  # the library's own bounds (iteration budget) and runtime errors
            return False, _one_line(str(exc))
        from cel_expr_python import cel  # loaded by _env() already: a dictionary lookup

        kind = value.type()
        if kind == cel.Type.ERROR:
            return False, _one_line(str(value.plain_value()))
        if kind != cel.Type.BOOL:
            return False, f"the expression gave a {kind.name()}, not a bool"
        return bool(value.plain_value()), None


class Extraction:
    """One compiled RFC 9535 JSONPath; the first node it selects is the value."""

    def __init__(self, source: str) -> None:
        import jsonpath_rfc9535  # on the first extraction compiled, as the CEL runtime

        self.source = source
        try:
            self._path = jsonpath_rfc9535.compile(source)
        except jsonpath_rfc9535.JSONPathError as exc:
            raise ExpressionError(_jsonpath_error(exc)) from None

    def first(self, document: Any) -> tuple[bool, Any]:
        """(found, value): the first selected node."""
        for node in self._path.find(document):
            return True, node.value
        return False, None


def check_json_bounds(document: Any) -> str | None:
    """Why a parsed body is too large or too deep to hand to CEL or JSONPath, or None."""
    count = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_JSON_VALUES:
            return f"the JSON answer has more than {MAX_JSON_VALUES} values"
        if depth > MAX_JSON_DEPTH:
            return f"the JSON answer is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


def extracted_too_large(value: Any) -> bool:
    """An extracted var must stay small: it goes into paths, headers and the next contexts."""
    if isinstance(value, str):
        return len(value) > MAX_EXTRACT_CHARS
    if isinstance(value, (dict, list)):
        return len(repr(value)) > MAX_EXTRACT_CHARS
    return False


def _cel_error(message: str) -> str:
    """cel-cpp's `INVALID_ARGUMENT: ERROR: <input>:1:19: Syntax error: ...` as `Syntax error at 1:19: ...`."""
    found = _POSITION.search(message)
    if found is None:
        return _one_line(message)
    line, column, text = found.groups()
    text = text.split("\n")[0].strip()
    head, sep, rest = text.partition(":")
    if sep and head in ("Syntax error",):
        return f"{head} at {line}:{column}:{rest}"
    return f"error at {line}:{column}: {text}"


def _jsonpath_error(exc: Exception) -> str:
    text = _one_line(str(exc))
    found = re.search(r"line (\d+), column (\d+)", text)
    if found:
        return f"JSONPath syntax error at {found.group(1)}:{found.group(2)}: {text.split(',')[0]}"
    return f"JSONPath error: {text}"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "…"
