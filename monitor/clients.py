"""Build the one long-lived HTTP client of each configured target."""

from __future__ import annotations

from monitor import __version__
from monitor.config import TargetConfig
from monitor.http.client import TargetClient
from monitor.scenario.registry import KINDS


def make_client(target: TargetConfig) -> TargetClient:
    auth = target.auth
    verify: bool | str = str(target.tls.ca_file) if target.tls.ca_file else target.tls.verify
    return TargetClient(
        target.url,
        headers=dict(target.headers),
        basic_auth=auth.basic if auth else None,
        bearer_token=auth.bearer if auth else None,
        verify=verify,
        max_body_bytes=target.max_body_bytes,
        user_agent=f"synthetic-monitor/{__version__}",
        error_hint=KINDS[target.kind].error_hint,
        error_classifier=KINDS[target.kind].classify_error,
    )
