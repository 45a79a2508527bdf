"""Basic auth of the web config (monitor/web/webconfig.py): the header edge cases, the
cache of good answers, and `basic_auth_users` changed while the daemon runs.

In-process: BasicAuth and ServerSecurity are what the HTTP server asks per request;
the end-to-end path (a real server, a real Prometheus) is in test_hardening.py.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import bcrypt
import pytest
import structlog.testing
import yaml

from monitor.web import webconfig
from monitor.web.webconfig import BasicAuth, ServerSecurity, load_web_config


def hashed(password: bytes) -> bytes:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))  # the lowest cost: these are tests


def header(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode()}"


@pytest.fixture(scope="module")
def auth() -> BasicAuth:
    return BasicAuth({"prom": hashed(b"s3cret"), "long": hashed(b"x" * 72)})


def test_the_right_password_passes_and_the_scheme_is_case_insensitive(auth: BasicAuth) -> None:
    assert auth.check(header(b"prom:s3cret"))
    assert auth.check(header(b"prom:s3cret", scheme="basic"))


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic cHJvbTpzM2NyZXQ",  # base64 of prom:s3cret without its padding
        header(b"\xff\xfe:\xff"),  # not UTF-8
        header(b"prom"),  # no colon: a user without a password
        header(b"prom:"),  # an empty password
        header(b":s3cret"),  # no user
        header(b"nobody:s3cret"),  # an unknown user
        header(b"prom:S3cret"),  # the wrong password
        header(b"prom:s3cret:"),  # the password runs to the end, colons included
    ],
)
def test_malformed_or_wrong_credentials_fail_without_raising(auth: BasicAuth, value: str | None) -> None:
    assert auth.check(value) is False


def test_a_password_over_72_bytes_fails_even_when_its_first_72_match(auth: BasicAuth) -> None:
    """bcrypt looks at 72 bytes only: a longer password must not pass on its prefix."""
    assert auth.check(header(b"long:" + b"x" * 72))
    assert auth.check(header(b"long:" + b"x" * 80)) is False


def test_good_answers_are_cached_and_the_oldest_is_evicted(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        rounds.append(password)
        return real(password, hashed_password)

    monkeypatch.setattr(webconfig, "_CACHE_SIZE", 2)
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    auth = BasicAuth({name: hashed(name.encode()) for name in ("a", "b", "c")})

    def check(name: str) -> bool:
        return auth.check(header(f"{name}:{name}".encode()))

    assert check("a") and check("a")
    assert rounds == [b"a"]  # the second scrape costs no bcrypt round
    assert check("b") and check("c")  # the cache holds 2: "a" is evicted
    assert rounds == [b"a", b"b", b"c"]
    assert check("c") and rounds == [b"a", b"b", b"c"]
    assert check("a") and rounds == [b"a", b"b", b"c", b"a"]  # evicted: checked again
    # A wrong password costs one round, then its failure is cached for a short while (by an
    # HMAC of the credentials): a flood of the same wrong password costs no more bcrypt.
    assert not auth.check(header(b"a:wrong")) and not auth.check(header(b"a:wrong"))
    assert rounds[-2:] == [b"a", b"wrong"]


def _write(path: Path, users: dict[str, bytes] | None) -> None:
    """Replace the web config file (a new inode, as a ConfigMap update does)."""
    temp = path.with_suffix(".tmp")
    document = {"basic_auth_users": {u: h.decode() for u, h in users.items()}} if users is not None else {}
    temp.write_text(yaml.safe_dump(document))
    os.replace(temp, path)


def test_changing_basic_auth_users_at_runtime(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    _write(path, {"prom": hashed(b"old")})
    security = ServerSecurity(load_web_config(path))
    assert security.auth is not None and security.auth.check(header(b"prom:old"))

    # The password is rotated: the old one (cached as good) stops working at once.
    _write(path, {"prom": hashed(b"new"), "grafana": hashed(b"g")})
    with structlog.testing.capture_logs() as logs:
        security.refresh()
    assert security.auth is not None
    assert not security.auth.check(header(b"prom:old"))
    assert security.auth.check(header(b"prom:new")) and security.auth.check(header(b"grafana:g"))
    assert [e["event"] for e in logs] == ["web_config_reloaded"] and logs[0]["basic_auth"] is True

    # A broken change (a plain password) keeps the users that work, reported once.
    path.write_text(yaml.safe_dump({"basic_auth_users": {"prom": "plain-password"}}))
    with structlog.testing.capture_logs() as logs:
        security.refresh()
        security.refresh()
    assert [e["event"] for e in logs] == ["web_config_reload_failed"]
    assert "basic_auth_users.prom" in logs[0]["error"]
    assert security.auth is not None and security.auth.check(header(b"prom:new"))

    # The users removed (the shape of a half-written file): refused, the last good users
    # stay; turning authentication off takes a restart.
    _write(path, None)
    with structlog.testing.capture_logs() as logs:
        security.refresh()
    assert [e["event"] for e in logs] == ["web_config_reload_failed"]
    assert security.auth is not None and security.auth.check(header(b"prom:new"))
