"""`targets:`: what to probe, how to authenticate and which TLS to trust."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from monitor.config.common import FieldError, HeaderName, HeaderValue, Model, Name, check_url, read_secret, ssl_reason
from monitor.http.secrets import FileSecret, SecretFileError
from monitor.scenario.registry import KINDS


def _file_secret(field: str, path: Path) -> FileSecret:
    """The file read now (a missing or multi-line one is a config error naming the field), again on change."""
    try:
        return FileSecret(path)
    except SecretFileError as exc:
        raise FieldError(field, str(exc)) from None


class SecretFile(Model):
    """A value read from a file, re-read when the file changes (`{file: PATH}`)."""

    file: Path

    @model_validator(mode="after")
    def _read(self) -> SecretFile:
        self._secret = _file_secret("file", self.file)
        return self

    def value(self) -> str:
        return self._secret.value()


# A header value inline, or `{file: PATH}` (a mapping is always read as the file form).
HeaderSetting = Annotated[
    Annotated[HeaderValue, Tag("header-value")] | Annotated[SecretFile, Tag("header-file")],
    Discriminator(lambda v: "header-file" if isinstance(v, (dict, SecretFile)) else "header-value"),
]


class BasicAuthConfig(Model):
    """Prometheus' client name: `basic_auth: {username, password_file}` (the file re-read on change)."""

    username: str
    password_file: Path

    @model_validator(mode="after")
    def _read(self) -> BasicAuthConfig:
        self._secret = _file_secret("password_file", self.password_file)
        return self

    def password(self) -> str:
        return self._secret.value()


class AuthConfig(Model):
    """Basic auth (username + password) or a bearer token; values inline or from files."""

    # Basic-auth user name.
    username: str | None = None
    # Basic-auth password (never logged or shown).
    password: SecretStr | None = None
    # A file holding the password, read at load (a Kubernetes Secret mount).
    password_file: Path | None = None
    # Bearer token (never logged or shown).
    token: SecretStr | None = None
    # A file holding the bearer token, read at load.
    token_file: Path | None = None
    # Prometheus' client name; unlike token_file it is re-read when the file changes.
    bearer_token_file: Path | None = None

    @model_validator(mode="after")
    def _resolve(self) -> AuthConfig:
        self._bearer_file: FileSecret | None = None
        if self.bearer_token_file is not None:
            if self.token is not None or self.token_file is not None or self.username is not None:
                raise FieldError("bearer_token_file", "set bearer_token_file alone (not with token or username)")
            self._bearer_file = _file_secret("bearer_token_file", self.bearer_token_file)
        if self.password_file is not None:
            if self.password is not None:
                raise FieldError("password_file", "set password or password_file, not both")
            self.password = SecretStr(read_secret("password_file", self.password_file))
        if self.token_file is not None:
            if self.token is not None:
                raise FieldError("token_file", "set token or token_file, not both")
            self.token = SecretStr(read_secret("token_file", self.token_file))
        if self.token is not None and any(c in self.token.get_secret_value() for c in "\r\n\0"):
            # It is sent raw in `Authorization: Bearer ...`; the value itself is never shown.
            raise FieldError(
                "token_file" if self.token_file is not None else "token",
                "the token holds a CR, LF or NUL character (one line of text only)",
            )
        if self.token is not None and self.username is not None:
            raise FieldError("token", "set either username/password or token, not both")
        if self.password is not None and self.username is None:
            raise FieldError("username", "a password needs a username")
        return self

    @property
    def basic(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return self.username, self.password.get_secret_value() if self.password else ""

    @property
    def bearer(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    @property
    def bearer_file(self) -> FileSecret | None:
        return self._bearer_file


class TLSClientConfig(Model):
    # Check the server's certificate (https targets).
    verify: bool = True
    # PEM CA bundle to check the server's certificate against, instead of the system's.
    ca_file: Path | None = None

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        if value is not None:
            # Loaded here, as the client will load it: a file that is not a PEM certificate
            # is a config error naming the field, not a traceback at start or on reload.
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"{value} is not a PEM CA certificate file ({ssl_reason(exc)})") from None
        return value


def _known_kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown kind {value!r}; known: {', '.join(KINDS)}")
    return value


class TargetConfig(Model):
    # The target label of every series and alert.
    name: Name
    # The kind of service, one a plug-in declares (monitor/probes/).
    kind: Annotated[str, AfterValidator(_known_kind)]
    # http(s) URL with a host; userinfo in it becomes basic auth.
    url: Annotated[str, BeforeValidator(lambda v: v if not isinstance(v, str) else v.strip())]
    auth: AuthConfig | None = None
    tls: TLSClientConfig = TLSClientConfig()
    # Extra request headers: a value, or {file: PATH} re-read when it changes; credential-like names are secrets.
    headers: dict[HeaderName, HeaderSetting] = {}
    # Prometheus' client name: {username, password_file}; the file is re-read when it changes.
    basic_auth: BasicAuthConfig | None = None
    # Larger answers are invalid_response, read no further.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _one_auth(self) -> TargetConfig:
        if self.basic_auth is not None and self.auth is not None:
            raise FieldError("basic_auth", "set auth or basic_auth, not both")
        return self

    def static_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if isinstance(v, str)}

    def file_headers(self) -> dict[str, SecretFile]:
        return {k: v for k, v in self.headers.items() if isinstance(v, SecretFile)}

    check_url = field_validator("url")(classmethod(lambda cls, v: check_url(v)))
