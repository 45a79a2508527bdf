"""Shared fixtures: one real MLflow server for the session, fresh ones for fault tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import MlflowServer

# The production-shape stack (gunicorn + PostgreSQL + S3) as the session fixture `prodstack`.
pytest_plugins = ["tests.prodstack"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """A private MLflow server that a test may kill or pause."""
    server = MlflowServer(tmp_path / "mlflow").start()
    yield server
    server.stop()
