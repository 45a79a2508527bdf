"""HTTP for probes: one long-lived client per target, bounded reads, and classification.

Every way a request can go wrong maps to exactly one `Reason` here, so scenarios never
see a raw httpx exception. Timing is the caller's job (the step measures itself on the
monotonic clock around the whole request, body included).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import ssl
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from monitor.certificates import PeerCertificate
from monitor.http.transport import LeanTransport, PeerClosed, Phases, UnsafeRequestHeader
from monitor.results import PhaseTimings, Reason, StepFailure

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
WORKER_FAILURE_STATUSES = frozenset({502, 503, 504})
# Share of a request's timeout it may spend waiting for a free pooled connection.
POOL_SHARE = 0.98
_ERROR_TEXT_LIMIT = 300

# A kind's advice for an unexpected answer: the hint text (with its leading space), or None.
ErrorHint = Callable[["HttpResponse"], "str | None"]
# A kind's reason for an unexpected status it knows its server answers itself, or None.
ErrorClassifier = Callable[["HttpResponse"], "Reason | None"]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A fully read (size-capped) response."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    method: str
    path: str
    phases: PhaseTimings | None = None
    # The target kind's error hints (probes/: e.g. a server option to allow the host), so
    # every check_status on this response can name a likely fix.
    hint: ErrorHint | None = None
    # The target kind's error classifier (see check_status).
    classify: ErrorClassifier | None = None
    # The certificate the server presented on this response's connection (https only).
    certificate: PeerCertificate | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The decoded JSON body; anything else is an `invalid_response`."""
        try:
            return json.loads(self.body)
        except RecursionError:
            # Nesting deeper than the interpreter's recursion limit: the server's answer is
            # at fault, not the probe (never `internal_error`).
            raise StepFailure(
                Reason.INVALID_RESPONSE, f"{self.method} {self.path}: JSON nested too deeply to parse", self.status_code
            ) from None
        except (ValueError, UnicodeDecodeError):
            kind = "HTML" if _looks_like_html(self.body) else "malformed JSON"
            raise StepFailure(
                Reason.INVALID_RESPONSE,
                f"{self.method} {self.path}: expected JSON, got {kind}: {_snippet(self.body)}",
                self.status_code,
            ) from None

    def json_object(self) -> dict[str, Any]:
        """A JSON object body; a list or scalar is an `invalid_response`."""
        data = self.json()
        if not isinstance(data, dict):
            raise StepFailure(
                Reason.INVALID_RESPONSE,
                f"{self.method} {self.path}: expected a JSON object, got {type(data).__name__}",
                self.status_code,
            )
        return data


def redact_url(url: str) -> str:
    """The URL without userinfo: safe for logs, labels and /status."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host in a server-provided value
        return re.sub(r"//[^/\s@]*@", "//", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """Move `user:pass@` out of a URL into basic-auth credentials."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    return redact_url(url), (unquote(parts.username), unquote(parts.password or ""))


_URL_CACHE_SIZE = 256
# Content encodings we inflate ourselves, with a bounded output (see _read_capped);
# wbits 47 accepts a gzip or a zlib header, -15 is raw deflate as some servers send it.
_DECODERS: dict[str, Callable[[], Any]] = {
    "identity": lambda: None,
    "": lambda: None,
    "gzip": lambda: zlib.decompressobj(47),
    "x-gzip": lambda: zlib.decompressobj(47),
    "deflate": lambda: zlib.decompressobj(47),
}


@functools.lru_cache(maxsize=2)
def _shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """One TLS context for every target with the same verify flag.

    httpx would build one per client, loading the CA bundle each time: ~0.7 MB and ~20 ms
    a target. Exactly what AsyncClient(verify=..., trust_env=False) would create itself.
    """
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def _ssl_context(verify: bool | str) -> ssl.SSLContext | Callable[[], ssl.SSLContext]:
    """A CA file gets its own context, read when the client is made (a bad file fails
    early); the shared ones are made on the first https connection."""
    if not isinstance(verify, bool):
        return ssl.create_default_context(cafile=verify)
    return functools.partial(_shared_ssl_context, verify)


class TargetClient:
    """One connection pool per target, reused by every run of every probe on it.

    Requests are httpx `Request`s sent straight to the target's transport: no
    `AsyncClient` in between, because its per-request work (cookie jar, auth flow, URL and
    header merging) cost more CPU than the request itself, and a probe must not carry
    cookies from one run into the next anyway. Default headers, credentials and URLs are
    built once here instead.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        verify: bool | str = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        user_agent: str = "synthetic-monitor",
        error_hint: ErrorHint | None = None,
        error_classifier: ErrorClassifier | None = None,
        secret_headers: dict[str, Callable[[], str]] | None = None,
    ) -> None:
        base_url, url_auth = split_userinfo(base_url)
        self.error_hint = error_hint
        self.error_classifier = error_classifier
        # Header values read per request (secrets from files, re-read when the file changes).
        self._secret_headers = dict(secret_headers or {})
        basic_auth = basic_auth or url_auth
        all_headers = {"User-Agent": user_agent, "Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        all_headers.update(headers or {})
        if basic_auth:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode("ascii")
            all_headers["Authorization"] = f"Basic {token}"
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        self.base_url = base_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self._base = httpx.URL(self.base_url + "/")
        self._headers = httpx.Headers(all_headers)
        self._json_headers = httpx.Headers({**all_headers, "Content-Type": "application/json"})
        self._transport = LeanTransport(_ssl_context(verify), max_connections=4, keepalive_expiry=30.0)
        self._urls: dict[Any, httpx.URL] = {}

    def _url(self, path: str, params: dict[str, Any] | None) -> httpx.URL:
        """`path` under the base URL (its path is a prefix), with `params`; parsed once per distinct pair."""
        # The value's type is part of the key: True and 1 hash alike but encode differently.
        key: Any = (path, tuple((k, type(v), v) for k, v in params.items())) if params else path
        try:
            url = self._urls.get(key)
        except TypeError:  # unhashable parameter values: build it every time
            key, url = None, None
        if url is None:
            url = httpx.URL(path)
            if url.is_relative_url:
                url = self._base.copy_with(raw_path=self._base.raw_path + url.raw_path.lstrip(b"/"))
            if params:
                url = url.copy_merge_params(params)
            if key is not None and len(self._urls) < _URL_CACHE_SIZE:
                self._urls[key] = url
        return url

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        max_body_bytes: int | None = None,
    ) -> HttpResponse:
        """Send one request and read the whole body within `timeout` seconds.

        Raises StepFailure for transport problems; any HTTP status is returned as is
        (the scenario decides which statuses it expects, see `check_status`).
        `max_body_bytes` raises the target's cap for a body whose size the caller knows
        (an artifact it uploaded itself).
        """
        if timeout <= 0:
            raise StepFailure(Reason.TIMEOUT, f"{method} {path}: probe deadline exhausted before the request")
        request_headers = self._headers
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            request_headers = self._json_headers
        if headers or self._secret_headers:
            request_headers = request_headers.copy()
            request_headers.update(headers or {})
            try:
                for name, current in self._secret_headers.items():
                    request_headers[name] = current()
            except OSError as exc:  # the monitor's own secret file: nothing was sent
                raise StepFailure(
                    Reason.INTERNAL_ERROR, f"{method} {path}: request not sent: {exc}", component="monitor"
                ) from None
        phases = Phases()  # filled by the transport, also as far as a failed request got
        try:
            url = self._url(path, params)
        except httpx.InvalidURL as exc:
            # The base URL was validated with the config, so a path that makes no valid URL
            # holds a value the server gave us (a run id, a model name, an artifact URI).
            raise StepFailure(
                Reason.INVALID_RESPONSE, f"{method} {_truncate(path)}: the server's answer makes no valid URL: {exc}"
            ) from None
        try:
            async with asyncio.timeout(timeout):
                request = httpx.Request(
                    method,
                    url,
                    headers=request_headers,
                    content=content,
                    # The pool wait gives up just before the whole request's bound, so waiting
                    # for one of our own connections surfaces as PoolTimeout, not as a timeout.
                    extensions={
                        "timeout": {
                            "connect": timeout,
                            "read": timeout,
                            "write": timeout,
                            "pool": timeout * POOL_SHARE,
                        },
                        "phases": phases,
                    },
                )
                response = await self._transport.handle_async_request(request)
                try:
                    body = await self._read_capped(response, method, path, max_body_bytes)
                finally:
                    await response.aclose()
                return HttpResponse(
                    response.status_code,
                    response.headers,
                    body,
                    method,
                    path,
                    _timings(phases),
                    self.error_hint,
                    self.error_classifier,
                    response.extensions.get("tls_certificate"),
                )
        except StepFailure as failure:
            if failure.phases is None:
                failure.phases = _timings(phases)
            raise
        except httpx.PoolTimeout:
            # The monitor's own trouble: every connection of its pool to this target is busy
            # (other probes' requests hang). Nothing was sent, so nothing is known about the target.
            raise StepFailure(
                Reason.INTERNAL_ERROR,
                f"{method} {path}: the monitor got none of its own connections to this target within"
                f" {timeout * POOL_SHARE:.3g}s (its pool is exhausted by other requests); the target was not asked",
                component="monitor",
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise StepFailure(
                Reason.TIMEOUT, f"{method} {path}: no complete response within {timeout:.3g}s", phases=_timings(phases)
            ) from None
        except httpx.HTTPError as exc:
            reason, message = classify_exception(exc)
            raise StepFailure(reason, f"{method} {path}: {message}", phases=_timings(phases)) from None

    async def _read_capped(
        self, response: httpx.Response, method: str, path: str, max_body_bytes: int | None = None
    ) -> bytes:
        cap = max(self.max_body_bytes, max_body_bytes or 0)
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise StepFailure(
                Reason.INVALID_RESPONSE,
                f"{method} {path}: response body of {declared} bytes exceeds the {cap} byte cap",
                response.status_code,
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in _DECODERS:
            raise StepFailure(
                Reason.INVALID_RESPONSE,
                f"{method} {path}: unsupported content-encoding {encoding!r}",
                response.status_code,
            )
        # Raw bytes, inflated here with a bound on the output: httpx would inflate each
        # network read whole, so a small gzip bomb could allocate far beyond the cap.
        decoder = _DECODERS[encoding]()
        chunks: list[bytes] = []
        size = 0
        stream = cast(httpx.AsyncByteStream, response.stream)  # the transport's own stream, no wrapper
        async for raw in stream:
            try:
                chunk = decoder.decompress(raw, cap - size + 1) if decoder else raw
            except zlib.error as exc:
                raise StepFailure(
                    Reason.INVALID_RESPONSE,
                    f"{method} {path}: undecodable {encoding} body: {exc}",
                    response.status_code,
                ) from None
            size += len(chunk)
            if size > cap:
                raise StepFailure(
                    Reason.INVALID_RESPONSE,
                    f"{method} {path}: response body exceeds the {cap} byte cap",
                    response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._transport.aclose()


def _timings(phases: Phases) -> PhaseTimings:
    return PhaseTimings(phases.connect, phases.tls, phases.first_byte, phases.body)


def classify_exception(exc: BaseException) -> tuple[Reason, str]:
    """Map a transport exception to a reason and a short message (no secrets: no URLs)."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return Reason.TIMEOUT, "timed out"
    if _has_ssl_cause(exc):
        return Reason.TLS_ERROR, f"TLS error: {_root_message(exc)}"
    if isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return Reason.UNREACHABLE, f"cannot connect: {_root_message(exc)}"
    if isinstance(exc, UnsafeRequestHeader):  # the monitor's own request (its configuration), never the target's fault
        return Reason.INTERNAL_ERROR, f"request not sent, the monitor's configuration is wrong: {exc}"
    if isinstance(exc, PeerClosed):  # by type: the message may quote what the server sent
        return Reason.WORKER_FAILURE, f"connection closed by the server: {_root_message(exc)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return Reason.INVALID_RESPONSE, f"malformed HTTP response: {_root_message(exc)}"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return Reason.WORKER_FAILURE, f"connection broken: {_root_message(exc)}"
    if isinstance(exc, httpx.DecodingError):
        return Reason.INVALID_RESPONSE, f"undecodable body: {_root_message(exc)}"
    if isinstance(exc, httpx.TooManyRedirects):
        return Reason.HTTP_ERROR, "too many redirects"
    if isinstance(exc, httpx.NetworkError):
        return Reason.UNREACHABLE, f"network error: {_root_message(exc)}"
    return Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


def classify_status(status: int) -> Reason:
    """The generic reason for an HTTP status the step did not expect.

    502/503/504 is a worker failure: what a proxy or a server's process manager answers
    when the worker behind it died. A kind whose server answers such a status itself (its
    own JSON error, proof its worker was alive) says so with its `classify_error` hook.
    """
    return Reason.WORKER_FAILURE if status in WORKER_FAILURE_STATUSES else Reason.HTTP_ERROR


def check_status(response: HttpResponse, expected: frozenset[int] | set[int] = frozenset({200})) -> None:
    """Raise a classified StepFailure when the status is not one the step expects."""
    if response.status_code in expected:
        return
    reason = response.classify(response) if response.classify is not None else None
    raise StepFailure(
        reason or classify_status(response.status_code), describe_http_error(response), response.status_code
    )


def describe_http_error(response: HttpResponse) -> str:
    """A one-line error: status, the service's error_code/message if any, and a hint where
    the target's kind knows one (else the generic credentials hint on a 401)."""
    head = f"{response.method} {response.path}: HTTP {response.status_code}"
    detail = _error_detail(response.body)
    hint = (response.hint(response) if response.hint is not None else None) or ""
    if not hint and response.status_code == 401:
        hint = " (check the target's credentials)"
    return f"{head}: {detail}{hint}" if detail else f"{head}{hint}"


def _error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _snippet(body)
    if isinstance(data, dict):
        code = data.get("error_code")
        message = data.get("message") or data.get("detail") or data.get("error")
        parts = [str(p) for p in (code, message) if p]
        if parts:
            return _truncate(" ".join(parts))
    return _snippet(body)


def _snippet(body: bytes) -> str:
    text = body[: _ERROR_TEXT_LIMIT * 2].decode("utf-8", errors="replace")
    if _looks_like_html(body):
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        text = f"HTML page{': ' + title.group(1).strip() if title else ''}"
    return _truncate(" ".join(text.split()))


def _truncate(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 1] + "…"


def _looks_like_html(body: bytes) -> bool:
    head = body[:200].lstrip().lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html") or b"<html" in head


def _has_ssl_cause(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _root_message(exc: BaseException) -> str:
    current = exc
    while (parent := current.__cause__ or current.__context__) is not None:
        current = parent
    text = str(current) or str(exc) or type(current).__name__
    return _truncate(" ".join(text.split()))
