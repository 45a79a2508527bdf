"""The production shape of MLflow, on loopback: gunicorn (4 sync workers) on PostgreSQL 15
with artifacts in an S3 bucket (moto's S3 server).

Real parts, as the original deployment runs them:
- PostgreSQL 15 from Debian, its own cluster in a temp dir owned by `postgres` (initdb and
  pg_ctl must not run as root: `runuser -u postgres --`), a free port on 127.0.0.1;
- `moto_server` (moto[server]) as the S3 endpoint, the bucket made with boto3;
- `mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...
  --workers 4 --gunicorn-opts "--worker-class sync --timeout T --keep-alive 5"`.

Each part can be stopped, paused and started again on the same port, for fault tests.
A missing part skips with a visible reason. Use the session fixture `prodstack` (via
`pytest_plugins` in conftest.py); its checks `active_probe_runs()` and `probe_objects()`
are what a test asserts at the end (nothing left behind).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import VENV_BIN, ServerProcess, free_port
from tests.servers import mlflow_executable

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_USER, DB_PASSWORD, DB_NAME = "mlflow", "mlflow123", "mlflow"
BUCKET, PREFIX = "mlflow-artifacts", "prod"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# gunicorn kills a worker stuck this long (WORKER TIMEOUT): short, so a test sees it soon,
# long enough that a cold worker's first artifact request (lazy boto3 import) survives it
# on a loaded 2-core machine (3 s did not).
GUNICORN_TIMEOUT = 5


def missing_parts() -> str | None:
    """Why the production stack cannot run here, or None."""
    if os.geteuid() != 0:
        return "the production stack needs root (initdb/pg_ctl run as the postgres user via runuser)"
    if not (PG_BIN / "initdb").exists():
        return "PostgreSQL 15 is not installed (apt-get install postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` system user (apt-get install postgresql)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    if not (VENV_BIN / "moto_server").exists() and shutil.which("moto_server") is None:
        return "moto_server is missing (pip install 'moto[server]', in the test extra)"
    try:
        import boto3  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is missing (pip install -e '.[test]')"
    return None


class Postgres:
    """A PostgreSQL 15 cluster in its own temp dir, run as `postgres`."""

    def __init__(self) -> None:
        # Not under pytest's tmp dir: its parents are root-only (0700) and postgres must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="prodstack-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()

    @property
    def uri(self) -> str:
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={DB_USER} password={DB_PASSWORD} dbname={DB_NAME}"

    def _as_postgres(self, *command: str, timeout: float = 60) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        return done.stdout

    def init(self) -> Postgres:
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        # Two statements, as the setup does (CREATE DATABASE cannot share a transaction).
        self.psql(f"CREATE USER {DB_USER} WITH PASSWORD '{DB_PASSWORD}'")
        self.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._as_postgres(
            str(PG_BIN / "psql"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atqc",
            sql,
        )

    def start(self) -> None:
        # Unix socket in our dir, TCP on loopback only; durability off (a test database).
        options = (
            f"-k {self.dir} -p {self.port} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c client_connection_check_interval=1s"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, as in a database outage or failover."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)

    def destroy(self) -> None:
        if self.running():
            try:
                self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 1500) -> str:
        path = self.dir / "postgres.log"
        return "--- postgres log ---\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "(none)")


class MotoS3(ServerProcess):
    """moto's S3 server on a fixed loopback port: killable, pausable, restartable in place."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        binary = VENV_BIN / "moto_server"
        command = [str(binary) if binary.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)]
        super().__init__("moto", command, workdir, env=AWS_ENV, port=port)
        self.ready_timeout = 30.0
        self.log_path = workdir / "moto.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> MotoS3:
        super().start(timeout)
        # moto keeps everything in memory: a restarted server has no bucket until we make it.
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
        )

    def objects(self, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]


class ProdMlflow(ServerProcess):
    """`mlflow server` under gunicorn (4 sync workers) on PostgreSQL with S3 artifacts."""

    # gunicorn waits up to 30 s for busy workers; a test server need not.
    stop_timeout = 5.0

    def __init__(self, workdir: Path, postgres: Postgres, s3: MotoS3, timeout: int = GUNICORN_TIMEOUT) -> None:
        port = free_port()
        command = [
            mlflow_executable(),
            "server",
            "--backend-store-uri",
            postgres.uri,
            "--artifacts-destination",
            f"s3://{BUCKET}/{PREFIX}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "4",
            # --no-control-socket: gunicorn >= 24 otherwise shares ~/.gunicorn/gunicorn.ctl between servers.
            "--gunicorn-opts",
            f"--worker-class sync --timeout {timeout} --keep-alive 5 --no-control-socket",
        ]
        env = dict(
            AWS_ENV,
            MLFLOW_S3_ENDPOINT_URL=s3.url,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            # One retry, not boto's default four with backoff: a dead S3 shows as an error, not a hang.
            AWS_RETRY_MODE="standard",
            AWS_MAX_ATTEMPTS="2",
        )
        super().__init__("mlflow", command, workdir, env=env, ready_url=f"http://127.0.0.1:{port}/health", port=port)
        self.postgres = postgres
        self.s3 = s3
        self.timeout = timeout
        self.ready_timeout = 150.0
        self.log_path = workdir / "mlflow.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> ProdMlflow:
        super().start(timeout)
        self.warm_up()
        return self

    def warm_up(self, rounds: int = 2) -> None:
        """Bring every worker past its first, slow requests (lazy imports, the first database
        and S3 connections): /health answers as soon as one worker is up, and a cold worker
        takes seconds for its first artifact request on a loaded machine."""
        api = f"{self.url}/api/2.0"

        def one(index: int) -> None:
            with httpx.Client(timeout=60) as client:
                client.post(f"{api}/mlflow/experiments/search", json={"max_results": 1}).raise_for_status()
                path = f"{api}/mlflow-artifacts/artifacts/warmup/{index}.txt"
                client.put(path, content=b"warm-up").raise_for_status()
                client.get(path).raise_for_status()
                client.delete(path).raise_for_status()

        deadline = time.monotonic() + 120
        clean = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            while clean < rounds:
                try:
                    list(pool.map(one, range(8)))
                    clean += 1
                except httpx.HTTPError:
                    # A worker killed while cold (gunicorn's timeout) is replaced by another cold one.
                    clean = 0
                    if time.monotonic() > deadline:
                        raise


class ProdStack:
    """The three parts together, plus the end-of-test checks."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.postgres = Postgres()
        self.s3 = MotoS3(workdir)
        self.mlflow = ProdMlflow(workdir, self.postgres, self.s3)
        self.startup_seconds = 0.0

    def start(self) -> ProdStack:
        started = time.monotonic()
        self.postgres.init()
        self.s3.start()
        self.mlflow.start()
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        self.mlflow.stop()
        self.s3.kill()
        self.postgres.destroy()

    def active_probe_runs(self, tag: str = "synthetic_monitor.probe") -> list[str]:
        """Run ids of active (not deleted) runs carrying the probe tag, straight from PostgreSQL."""
        with self.postgres.connect() as conn:
            rows = conn.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid"
                " WHERE t.key = %s AND r.lifecycle_stage = 'active'",
                (tag,),
            ).fetchall()
        return [row[0] for row in rows]

    def model_versions(self, model_name: str | None = None) -> list[tuple[str, int]]:
        """(name, version) of registered-model versions not deleted, straight from PostgreSQL:
        for the registry scenario's "nothing accumulates" check (MLflow marks a deleted
        version `Deleted_Internal` before removing it)."""
        query = "SELECT name, version FROM model_versions WHERE current_stage <> 'Deleted_Internal'"
        params: tuple[str, ...] = ()
        if model_name is not None:
            query += " AND name = %s"
            params = (model_name,)
        with self.postgres.connect() as conn:
            return [(row[0], int(row[1])) for row in conn.execute(query, params).fetchall()]

    def probe_objects(self) -> list[str]:
        """Keys the probe wrote under the artifact prefix and did not delete."""
        return [
            key
            for key in self.s3.objects(PREFIX + "/")
            if "/synthetic-monitor/" in key or "/synthetic-monitor-model/" in key
        ]

    def tails(self) -> str:
        mlflow = self.mlflow.log_text()[-2500:] if self.mlflow.log_path.exists() else "(none)"
        return f"--- mlflow log ---\n{mlflow}\n{self.postgres.log_tail()}"


@pytest.fixture(scope="session")
def prodstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdStack]:
    """MLflow on gunicorn + PostgreSQL + S3 for the session (skips with the reason when a part is missing)."""
    reason = missing_parts()
    if reason:
        pytest.skip(reason)
    stack = ProdStack(tmp_path_factory.mktemp("prodstack"))
    try:
        stack.start()
    except Exception as exc:
        text = stack.tails()
        stack.stop()
        raise RuntimeError(f"the production stack did not start: {exc}\n{text}") from exc
    yield stack
    stack.stop()
