"""What every configuration section shares: the error types, durations, names, URL and header checks,
secret files, and the defaults that are contracts."""

from __future__ import annotations

import base64
import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from monitor.durations import parse_duration

DEFAULT_LISTEN = "0.0.0.0:9356"


DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


DEFAULT_TIMEOUT_SHARE = 0.8


# A run may last its deadline plus its cleanup reserve (probes/base.py); that must end
# within this share of the interval, so the next run is never skipped for an overrun
# (a skipped run during an outage would look like SyntheticMonitorStalled).
RUN_SHARE_LIMIT = 0.9


NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"


REPLICA_PATTERN = r"^[A-Za-z0-9_.-]{1,253}$"  # a pod or host name; also a tag value a probe writes


class ConfigError(Exception):
    """A configuration problem, already phrased for the user on one line; `problems` holds
    every problem found (the first is the message), for `config validate --all`."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class FieldError(ValueError):
    """A ValueError that knows which sub-field it is about, for a precise location."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def to_seconds(value: object) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(to_seconds)]


Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {safe_url(value)!r}")
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"has an invalid port: {safe_url(value)!r}") from None
    return value.rstrip("/")


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"not a valid HTTP header name: {value[:40]!r}")
    return value


def _header_value(value: str) -> str:
    """CR or LF in a value would end the header on the wire and let the rest of the value
    pass for headers (or a body) of its own: refused here, before anything is sent."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("header value holds a CR, LF or NUL character (one line of text only)")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


HeaderValue = Annotated[str, AfterValidator(_header_value)]


def basic_token(username: str, password: str) -> str:
    """The base64 `user:password` of a basic-auth header: a server may quote it back."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def safe_url(value: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", value)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def read_secret(field: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FieldError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def ssl_reason(exc: BaseException) -> str:
    """The short reason of an ssl error ("NO_CERTIFICATE_OR_CRL_FOUND"), not its repr."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(reason).split())[:200]


# Header names whose values are credentials; any other header (X-Env: prod) is not a
# secret, and redacting its value would blank that word in every log line and alert.
_SECRET_HEADER = re.compile(r"(?i)(auth|token|secret|passw|api[-_]?key|cookie|session|credential|signature)")


def is_secret_header(name: str) -> bool:
    """True for a header whose value is a credential (Authorization, X-Api-Key, Cookie, ...)."""
    return bool(_SECRET_HEADER.search(name))


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port 0-65535, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


# The tags of tagged unions (a header value inline or from a file): not a field of the config.
UNION_TAGS = frozenset({"header-value", "header-file"})


def field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before", "function-wrap")) or part == "[key]":
            continue
        elif part in UNION_TAGS:
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at `loc` (the location of an unknown key) accepts, for "did you mean"."""
    models = [model]
    for part in loc[:-1]:
        if isinstance(part, int) or not isinstance(part, str):
            continue
        found = [info.annotation for m in models for name, info in m.model_fields.items() if part in (name, info.alias)]
        if found:
            models = [m for annotation in found for m in _models_in(annotation)]
        # else: a dict key or a union tag; the models stay (a dict of models keeps its value model)
        if not models:
            return []
    return sorted({info.alias or name for m in models for name, info in m.model_fields.items()})


def article(word: str) -> str:
    """'an' before a vowel sound as written ("an http target"), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def did_you_mean(key: object, known: list[str]) -> str:
    """` (did you mean 'timeout'?)` for a misspelt key, else ''."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def error_message(error: Mapping[str, Any], model: type[BaseModel] | None = None) -> str:
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldError):
        return f"{cause.field}: {cause.message}" if cause.field else cause.message
    kind = error.get("type")
    if kind == "extra_forbidden":
        loc = tuple(error.get("loc", ()))
        return "unknown key" + (did_you_mean(loc[-1], known_keys(model, loc)) if model and loc else "")
    if kind == "missing":
        return "required but missing"
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    secret = any(str(part) in ("password", "token") for part in error.get("loc", ()))
    if kind not in ("value_error",) and not isinstance(value, (dict, list)) and value is not None and not secret:
        shown = repr(value)
        message += f" (got {shown if len(shown) < 60 else shown[:57] + '...'})"
    return message
