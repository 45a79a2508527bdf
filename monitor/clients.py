"""Build the one long-lived HTTP client of each configured target."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable

from monitor import __version__
from monitor.config import TargetConfig
from monitor.http.client import TargetClient
from monitor.scenario.registry import KINDS


def make_client(target: TargetConfig) -> TargetClient:
    auth = target.auth
    verify: bool | str = str(target.tls.ca_file) if target.tls.ca_file else target.tls.verify
    secret_headers: dict[str, Callable[[], str]] = {k: v.value for k, v in target.file_headers().items()}
    if auth is not None and auth.bearer_file is not None:
        secret_headers["Authorization"] = functools.partial(_bearer, auth.bearer_file.value)
    if target.basic_auth is not None:
        secret_headers["Authorization"] = functools.partial(
            _basic, target.basic_auth.username, target.basic_auth.password
        )
    return TargetClient(
        target.url,
        headers=target.static_headers(),
        secret_headers=secret_headers,
        basic_auth=auth.basic if auth else None,
        bearer_token=auth.bearer if auth else None,
        verify=verify,
        max_body_bytes=target.max_body_bytes,
        user_agent=f"synthetic-monitor/{__version__}",
        error_hint=KINDS[target.kind].error_hint,
        error_classifier=KINDS[target.kind].classify_error,
    )


def _bearer(token: Callable[[], str]) -> str:
    return f"Bearer {token()}"


def _basic(username: str, password: Callable[[], str]) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password()}".encode()).decode("ascii")
