"""The artifact round trip of the write path: bytes through MLflow's artifact proxy and back.

Small by default (proves the store behind MLflow answers). With `artifact_size` the probe
moves that many random bytes and reports the upload and download rates, so a slow S3 shows
in `synthetic_mlflow_artifact_throughput_bytes` before it times out. From
MULTIPART_MIN_BYTES on, when the server says it supports multipart uploads (server-info),
the upload takes the path large model files take: `mpu/create` hands out one presigned
storage URL per part, the parts go there, `mpu/complete` joins them. An upload created and
never completed is aborted (`mpu/abort`) so no orphan parts stay in the bucket.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import ARTIFACTS_API, MPU_API, SERVER_INFO, learnt, require_str
from monitor.results import Reason
from monitor.scenario.base import ScenarioRun, Step

# S3's smallest part (all but the last); below it one PUT is the only sensible upload.
MULTIPART_MIN_BYTES = 5 * 1024 * 1024
PART_BYTES = MULTIPART_MIN_BYTES
ALL_STEPS = ("artifact_put", "artifact_get", "artifact_abort", "artifact_delete")


def artifact_steps_off(artifacts: bool, size: int | None) -> tuple[str, ...]:
    """The artifact steps a write probe with these options never reports."""
    if not artifacts:
        return ALL_STEPS
    return () if size and size >= MULTIPART_MIN_BYTES else ("artifact_abort",)


@dataclass
class _Upload:
    """A multipart upload created and not yet completed (to abort in cleanup)."""

    directory: str = ""
    name: str = ""
    upload_id: str | None = None


async def artifact_round_trip(run: ScenarioRun, path: str, size: int | None) -> None:
    payload = os.urandom(size) if size else f"synthetic-monitor {secrets.token_hex(16)}\n".encode()
    rates: list[tuple[str, float]] = []
    upload = _Upload()
    try:
        async with run.step("artifact_put") as step:
            if size and size >= MULTIPART_MIN_BYTES and await _multipart_enabled(step):
                began = run.clock()
                await _multipart_put(step, path, payload, upload)
            else:
                began = run.clock()
                await step.request("PUT", path, content=payload, headers={"Content-Type": "application/octet-stream"})
            if size:
                rates.append(("upload", size / max(run.clock() - began, 1e-6)))
        async with run.step("artifact_get") as step:
            began = run.clock()
            got = await step.request("GET", path, headers={"Accept": "*/*"}, max_body_bytes=len(payload))
            elapsed = run.clock() - began
            if got.body != payload:
                step.fail(
                    Reason.VALIDATION_FAILED, f"artifact read-back differs: {len(got.body)} bytes, wrote {len(payload)}"
                )
            if size:
                rates.append(("download", size / max(elapsed, 1e-6)))
    finally:
        if rates:
            learnt(run, artifact_throughput=tuple((d, round(r, 1)) for d, r in rates))
        if upload.upload_id is not None:
            async with run.step("artifact_abort", cleanup=True) as step:
                await step.request(
                    "POST",
                    f"{MPU_API}/abort/{upload.directory}",
                    json_body={"path": upload.name, "upload_id": upload.upload_id},
                )
        async with run.step("artifact_delete", cleanup=True) as step:
            await step.request("DELETE", path)


async def _multipart_enabled(step: Step) -> bool:
    response = await step.request("GET", SERVER_INFO, expect={200, 404})
    if response.status_code == 404:
        return False
    enabled = response.json_object().get("multipart_uploads_enabled")
    return enabled is True


async def _multipart_put(step: Step, path: str, payload: bytes, upload: _Upload) -> None:
    relative = path[len(ARTIFACTS_API) + 1 :]
    upload.directory, _, quoted_name = relative.rpartition("/")
    upload.name = unquote(quoted_name)
    parts = math.ceil(len(payload) / PART_BYTES)
    created = (
        await step.request(
            "POST",
            f"{MPU_API}/create/{upload.directory}",
            json_body={"path": upload.name, "num_parts": parts},
        )
    ).json_object()
    upload.upload_id = require_str(step, created, "upload_id")
    credentials = sorted(
        (c for c in created.get("credentials", []) if isinstance(c, dict)), key=lambda c: int(c.get("part_number", 0))
    )
    if len(credentials) != parts:
        step.fail(Reason.INVALID_RESPONSE, f"mpu/create handed out {len(credentials)} part URLs for {parts} parts")
    done = []
    for credential in credentials:
        number = int(credential["part_number"])
        chunk = payload[(number - 1) * PART_BYTES : number * PART_BYTES]
        etag = await _put_part(step, require_str(step, credential, "url"), chunk, credential.get("headers"))
        done.append({"part_number": number, "etag": etag})
    await step.request(
        "POST",
        f"{MPU_API}/complete/{upload.directory}",
        json_body={"path": upload.name, "upload_id": upload.upload_id, "parts": done},
    )
    upload.upload_id = None  # completed: nothing to abort


async def _put_part(step: Step, url: str, chunk: bytes, headers: Any) -> str:
    """PUT one part to its presigned storage URL: another origin, so a client without the
    target's credentials; the signature stays out of error texts (sent as parameters)."""
    parts = urlsplit(url)
    storage = TargetClient(f"{parts.scheme}://{parts.netloc}")
    try:
        response = await step.request(
            "PUT",
            f"{parts.scheme}://{parts.netloc}{parts.path}",
            params=dict(parse_qsl(parts.query, keep_blank_values=True)),
            content=chunk,
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
            client=storage,
        )
    finally:
        await storage.aclose()
    etag = str(response.headers.get("etag") or "")
    if not etag:
        step.fail(Reason.INVALID_RESPONSE, "the storage answered a part upload without an ETag")
    return etag
