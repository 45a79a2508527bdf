"""The config contract of a check (`options.steps`), validated and compiled when the config loads.

A broken CEL expression or JSONPath, a var used before a step extracts it, more than
MAX_STEPS steps: each is a config error naming the field (`steps[1].assert[0].cel: Syntax
error at 1:9 ...`), so `config validate` refuses what a run would only find later.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from monitor.http.secrets import FileSecret, SecretFileError
from monitor.probes.http.expressions import Assertion, ExpressionError, Extraction
from monitor.scenario.base import ScenarioOptions

MAX_STEPS = 20
MAX_ASSERTIONS = 20
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CEL_VARS = re.compile(r"""(?<![\w.])vars\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*["']([^"']+)["']\s*\])""")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"  # a metric label value and an identifier
_METHOD = re.compile(r"^[A-Z]{1,16}$")


class FileValue(ScenarioOptions):
    """`{file: PATH}`: a header value read from a file, re-read when it changes (a secret)."""

    file: Path
    _secret: FileSecret | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read(self) -> FileValue:
        try:
            self._secret = FileSecret(self.file)
        except SecretFileError as exc:
            raise ValueError(str(exc)) from None
        return self

    def value(self) -> str:
        assert self._secret is not None
        return self._secret.value()


class Request(ScenarioOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    method: str = "GET"
    path: str = Field(min_length=1)
    query: dict[str, str] = {}
    headers: dict[str, str | FileValue] = {}
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not _METHOD.match(value.upper()):
            raise ValueError(f"not an HTTP method: {value!r}")
        return value.upper()

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if "://" in value or value.startswith("//"):
            raise ValueError("a path relative to the target URL (the target says where), not a URL")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> Request:
        if self.json_body is not None and self.body is not None:
            raise ValueError("set json or body, not both")
        return self

    def vars_used(self) -> set[str]:
        texts = [self.path, *self.query.values(), *(v for v in self.headers.values() if isinstance(v, str))]
        found = {m for text in texts for m in VAR.findall(text)}
        return found | _vars_in_json(self.json_body)


class Expect(ScenarioOptions):
    status: list[int] | None = None  # default: any 2xx

    @field_validator("status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(not 100 <= s <= 599 for s in value)):
            raise ValueError("a non-empty list of HTTP statuses (100-599)")
        return value

    def statuses(self) -> frozenset[int]:
        return frozenset(self.status) if self.status is not None else frozenset(range(200, 300))


class AssertSpec(ScenarioOptions):
    name: str = Field(pattern=_NAME)
    cel: str = Field(min_length=1)
    _compiled: Assertion | None = PrivateAttr(default=None)

    @field_validator("cel")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            Assertion(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _compile(self) -> AssertSpec:
        self._compiled = Assertion(self.cel)
        return self

    @property
    def compiled(self) -> Assertion:
        assert self._compiled is not None
        return self._compiled

    def vars_used(self) -> set[str]:
        return {a or b for a, b in _CEL_VARS.findall(self.cel)}


def _compiles_as_path(value: str) -> str:
    try:
        Extraction(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value


class StepSpec(ScenarioOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=_NAME)
    request: Request
    expect: Expect = Expect()
    assertions: list[AssertSpec] = Field(default=[], alias="assert", max_length=MAX_ASSERTIONS)
    extract: dict[Annotated[str, Field(pattern=_NAME)], Annotated[str, AfterValidator(_compiles_as_path)]] = {}
    cleanup: bool = False
    _paths: dict[str, Extraction] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> StepSpec:
        self._paths = {var: Extraction(path) for var, path in self.extract.items()}
        names = [a.name for a in self.assertions]
        if len(set(names)) != len(names):
            raise ValueError(f"assertion names repeat in step {self.name}: {names}")
        return self

    @property
    def extractions(self) -> dict[str, Extraction]:
        return self._paths

    def needs_body(self) -> bool:
        return bool(self.extract) or any("body" in a.compiled.names for a in self.assertions)

    def vars_needed(self) -> set[str]:
        return self.request.vars_used() | {v for a in self.assertions for v in a.vars_used()}


class HttpCheckOptions(ScenarioOptions):
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _vars_in_order(self) -> HttpCheckOptions:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        known: set[str] = set()
        for index, step in enumerate(self.steps):
            unknown = sorted(step.vars_needed() - known)
            if unknown:
                where = "request or assertions"
                raise ValueError(
                    f"steps[{index}] ({step.name}): var {', '.join(unknown)} used in its {where} before a step"
                    " extracts it (extraction runs after a step's assertions)"
                )
            known |= set(step.extract)
        return self


def _vars_in_json(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(VAR.findall(value))
    if isinstance(value, dict):
        return {v for item in value.values() for v in _vars_in_json(item)}
    if isinstance(value, list):
        return {v for item in value for v in _vars_in_json(item)}
    return set()
