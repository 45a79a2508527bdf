"""A small client of Prometheus' HTTP query API, with errors phrased for one line.

Only `query` and `query_range` are needed; `PrometheusError` says whether Prometheus
could not be reached or answered an error, which the report turns into exit code 2.
"""

from __future__ import annotations

from typing import Any

import httpx


class PrometheusError(Exception):
    """Prometheus unreachable or answering an error; the message is one line."""


class Prometheus:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = self._client.post(self.url + path, data=params)
        except httpx.TransportError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc or type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without a JSON body"
                " (is this the Prometheus base URL?)"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "no error text") if isinstance(body, dict) else "unexpected answer"
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}: {kind}: {str(error).splitlines()[0]}"
            )
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant vector: [{"metric": {...}, "value": [ts, "v"]}]."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data.get("resultType") != "vector":
            raise PrometheusError(f"Prometheus at {self.url} answered a {data.get('resultType')}, not a vector")
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A matrix: [{"metric": {...}, "values": [[ts, "v"], ...]}]."""
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        return list(data["result"])
