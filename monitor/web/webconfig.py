"""The exporter-toolkit web configuration (`--web.config.file`): TLS and basic auth.

Every Prometheus exporter reads the same file (tls_server_config, basic_auth_users with
bcrypt hashes), so operators and `promtool check web-config` already know it. Like
exporter-toolkit, the files are re-read when they change: a rotated certificate (cert-
manager renewing a Secret) is served on the next handshake without a restart. A change
that does not load keeps the last good settings, is logged as an error and counted
(synthetic_monitor_web_config_reload_failures_total). A reload never lowers the protection:
an empty file, or one that turns TLS or basic auth off (what a half-written file looks
like), is refused; turning them off takes a restart.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import structlog
import yaml

from monitor.config import ConfigError, ssl_reason

# exporter-toolkit's names for client certificate policies, as far as Python's ssl can
# honour them (it cannot ask for a client certificate without verifying it).
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
# Keys of the format this daemon does not implement: named, rather than "unknown key".
TLS_UNSUPPORTED = {
    "cert",
    "key",
    "client_ca",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
}
TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
TOP_UNSUPPORTED = {"rate_limit"}
# A failed bcrypt check still costs one comparison, so an unknown user is not told apart by timing.
_DUMMY_HASH = bcrypt.hashpw(b"synthetic-monitor", bcrypt.gensalt(rounds=10))
_CACHE_SIZE = 64
# Failed checks are remembered this long (and at most this many), so a flood repeating one
# wrong password costs one bcrypt, not one per request.
FAILURE_TTL_SECONDS = 30.0
_FAILURE_CACHE_SIZE = 4096
# bcrypt runs one at a time (as exporter-toolkit's bcryptMtx); at most this many requests
# wait for it, the rest are refused at once (429) instead of piling up threads.
MAX_BCRYPT_WAITERS = 4
# After a check, bcrypt stays locked for this share of the check's own time: a flood of new
# passwords then uses at most 1/(1+x) of one core, leaving the rest to the probes.
BCRYPT_REST_SHARE = 1.0


class Verdict:
    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"


@dataclass(frozen=True)
class ServerTLS:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None

    def files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now; ssl.SSLError/OSError if they do not load."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        if self.max_version is not None:
            context.maximum_version = self.max_version
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=str(self.client_ca_file))
        context.verify_mode = self.client_auth
        return context


@dataclass(frozen=True)
class WebConfig:
    tls: ServerTLS | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    source: Path | None = None


def load_web_config(path: str | os.PathLike[str], *, allow_empty: bool = True) -> WebConfig:
    """Read and check the file, certificates included; ConfigError naming the field.

    An empty file means plain HTTP at start (as exporter-toolkit); on a reload
    (`allow_empty=False`) it is what a half-written file looks like, so it is an error."""
    path = Path(path)
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the web config file: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{where}: the web config file is not valid YAML") from None
    if document is None:
        if not allow_empty:
            raise ConfigError(f"{where}: the web config file is empty (half-written?)")
        return WebConfig(source=path)
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: the top level must be a mapping (tls_server_config, basic_auth_users)")
    for key in document:
        if key in TOP_UNSUPPORTED:
            raise ConfigError(f"{where}: {key}: not supported by synthetic-monitor")
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: {key}: unknown key")
    tls = _tls(where, path.parent, document.get("tls_server_config"))
    users = _users(where, document.get("basic_auth_users"))
    http = document.get("http_server_config")
    if http not in (None, {}) and (not isinstance(http, dict) or set(http) - {"http2"}):
        raise ConfigError(f"{where}: http_server_config: only http2 is accepted (and ignored: HTTP/1.1 is served)")
    return WebConfig(tls, users, path)


def _tls(where: str, base: Path, raw: Any) -> ServerTLS | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tls_server_config: must be a mapping")
    for key in raw:
        if key in TLS_UNSUPPORTED:
            raise ConfigError(
                f"{where}: tls_server_config.{key}: not supported by synthetic-monitor (use the *_file keys)"
            )
        if key not in TLS_KEYS:
            raise ConfigError(f"{where}: tls_server_config.{key}: unknown key")
    for key in ("cert_file", "key_file"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: tls_server_config.{key}: required (a PEM file)")
    auth_type = raw.get("client_auth_type", "NoClientCert")
    if auth_type not in CLIENT_AUTH:
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type: {auth_type!r} is not supported; use one of {', '.join(CLIENT_AUTH)}"
        )
    ca = raw.get("client_ca_file")
    if CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not ca:
        raise ConfigError(f"{where}: tls_server_config.client_ca_file: required with client_auth_type {auth_type}")
    versions = {}
    for key in ("min_version", "max_version"):
        if key in raw:
            if raw[key] not in TLS_VERSIONS:
                raise ConfigError(f"{where}: tls_server_config.{key}: must be one of {', '.join(TLS_VERSIONS)}")
            versions[key] = TLS_VERSIONS[raw[key]]
    # exporter-toolkit resolves relative file names against the web config file's folder.
    tls = ServerTLS(
        cert_file=base / raw["cert_file"],
        key_file=base / raw["key_file"],
        client_ca_file=base / ca if ca else None,
        client_auth=CLIENT_AUTH[auth_type],
        min_version=versions.get("min_version", ssl.TLSVersion.TLSv1_2),
        max_version=versions.get("max_version"),
    )
    check_server_tls(tls, f"{where}: tls_server_config")
    return tls


def check_server_tls(tls: ServerTLS, where: str) -> None:
    """Load the files once now, so a bad file is a start-up error naming it, not a traceback."""
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, key)
        if value is not None and not os.access(value, os.R_OK):
            raise ConfigError(f"{where}.{key}: cannot read {value}")
    try:
        tls.context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{where}: the certificate and key do not load: {ssl_reason(exc)}") from None


def _users(where: str, raw: Any) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: basic_auth_users: must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{where}: basic_auth_users.{user}: must be a bcrypt hash ($2y$...), not a password")
        try:
            bcrypt.checkpw(b"", hashed.encode())
        except ValueError:
            raise ConfigError(f"{where}: basic_auth_users.{user}: not a valid bcrypt hash") from None
        users[str(user)] = hashed.encode()
    return users


class BasicAuth:
    """Checks an Authorization header against bcrypt hashes, with bounded cost.

    As exporter-toolkit: answers are cached under an HMAC of (user, hash, password) with a
    per-process key (the password itself is never kept), good ones until evicted, failed
    ones for FAILURE_TTL_SECONDS; and bcrypt runs one at a time, so unauthenticated
    clients can use at most one core. Beyond MAX_BCRYPT_WAITERS queued checks the answer
    is BUSY at once: a flood of distinct wrong passwords holds no thread per request.
    """

    def __init__(self, users: dict[str, bytes], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self.bcrypt_runs = 0
        self._key = os.urandom(32)
        self._clock = clock
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._bad: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()  # guards the caches and the waiter count
        self._bcrypt = threading.Lock()
        self._waiting = 0

    def check(self, header: str | None) -> bool:
        return self.verdict(header) == Verdict.OK

    def verdict(self, header: str | None) -> str:
        if not header or not header[:6].lower() == "basic ":
            return Verdict.DENIED
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return Verdict.DENIED
        if not sep:
            return Verdict.DENIED
        hashed = self.users.get(user)
        key = hmac.new(
            self._key, b"\0".join((user.encode(), hashed or b"", password.encode())), hashlib.sha256
        ).digest()
        with self._lock:
            cached = self._cached(key)
            if cached is not None:
                return cached
            if self._waiting >= MAX_BCRYPT_WAITERS:
                return Verdict.BUSY
            self._waiting += 1
        try:
            with self._bcrypt:
                with self._lock:  # answered while we waited (the same credentials queued twice)
                    cached = self._cached(key)
                if cached is not None:
                    return cached
                started = time.perf_counter()
                try:
                    ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
                except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
                    ok = False
                self.bcrypt_runs += 1
                if not ok:  # a good password costs one check, then it is cached: no rest needed
                    time.sleep((time.perf_counter() - started) * BCRYPT_REST_SHARE)
                with self._lock:
                    self._remember(key, ok)
        finally:
            with self._lock:
                self._waiting -= 1
        return Verdict.OK if ok else Verdict.DENIED

    def _cached(self, key: bytes) -> str | None:
        if key in self._good:
            self._good.move_to_end(key)
            return Verdict.OK
        expires = self._bad.get(key)
        if expires is None:
            return None
        if expires > self._clock():
            return Verdict.DENIED
        del self._bad[key]
        return None

    def _remember(self, key: bytes, ok: bool) -> None:
        if ok:
            self._good[key] = None
            if len(self._good) > _CACHE_SIZE:
                self._good.popitem(last=False)
            return
        self._bad[key] = self._clock() + FAILURE_TTL_SECONDS
        self._bad.move_to_end(key)
        while len(self._bad) > _FAILURE_CACHE_SIZE:
            self._bad.popitem(last=False)


class ServerSecurity:
    """What the HTTP server asks per connection: the TLS context to wrap it with and the
    basic-auth users, both re-read when their files change (checked by stat, cheap) or on
    SIGHUP (`refresh(force=True)`). A reload that does not load, or that would lower the
    protection, keeps the last good settings, logs an error and calls `on_reload_failure`."""

    def __init__(
        self,
        web_config: WebConfig | None = None,
        legacy_tls: ServerTLS | None = None,
        *,
        on_reload_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.log = structlog.get_logger("monitor.web.server")
        self.on_reload_failure = on_reload_failure
        self._path = web_config.source if web_config else None
        self._legacy = legacy_tls
        self._lock = threading.Lock()
        self._apply(web_config or WebConfig())

    def _apply(self, web: WebConfig) -> None:
        self._tls = web.tls or self._legacy
        self._context = self._tls.context() if self._tls else None
        self.auth = BasicAuth(web.users) if web.users else None
        self._signature = self._stat()

    def _stat(self) -> tuple[Any, ...]:
        paths = ([self._path] if self._path else []) + (list(self._tls.files()) if self._tls else [])
        out: list[tuple[Any, ...]] = []
        for path in paths:
            try:
                st = os.stat(path)
                out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(path), None))
        return tuple(out)

    @property
    def tls_enabled(self) -> bool:
        return self._context is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context for the next connection, rebuilt first if a file changed."""
        self.refresh()
        return self._context

    def refresh(self, force: bool = False) -> bool:
        """Re-read the files if they changed (or `force`); False when a reload was refused."""
        with self._lock:
            signature = self._stat()
            if signature == self._signature and not force:
                return True
            self._signature = signature  # a bad change is reported once, not per connection
            try:
                web = load_web_config(self._path, allow_empty=False) if self._path else WebConfig()
                tls = web.tls or self._legacy
                context = tls.context() if tls else None
                self._no_downgrade(context is not None, bool(web.users))
            except (ConfigError, ssl.SSLError, OSError, ValueError) as exc:
                self.log.error(
                    "web_config_reload_failed",
                    path=str(self._path) if self._path else None,
                    error=str(exc) if isinstance(exc, ConfigError) else ssl_reason(exc),
                    action="keeping the last good settings",
                    tls=self._context is not None,
                    basic_auth=self.auth is not None,
                )
                with contextlib.suppress(Exception):
                    self.on_reload_failure()
                return False
            self._tls, self._context = tls, context
            if self.auth is None or self.auth.users != web.users:  # same users: keep the cache
                self.auth = BasicAuth(web.users) if web.users else None
            self._signature = self._stat()
            self.log.info("web_config_reloaded", tls=context is not None, basic_auth=self.auth is not None)
            return True

    def _no_downgrade(self, tls: bool, auth: bool) -> None:
        if self._context is not None and not tls:
            raise ConfigError(f"{self._path}: tls_server_config: a reload cannot turn TLS off (restart to do that)")
        if self.auth is not None and not auth:
            raise ConfigError(
                f"{self._path}: basic_auth_users: a reload cannot remove every user (restart to turn authentication off)"
            )
