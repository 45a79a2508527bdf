"""What ships: the wheel and the image carry no stand-ins, and every dependency is pinned.

tests/standin/ (the Asgard stand-in, the recording webhook, the demo stack) is for the
tests and the demo, which run from a clone; `pip wheel .` and the Docker build context
leave it out. deploy/constraints.txt pins every dependency; the Dockerfile and
deploy/local/venv.sh (tests/run.sh, demo.sh) install through it.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "deploy" / "constraints.txt"
STANDIN = "tests/standin/"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"deploy/constraints.txt: {line!r} is not pinned with =="
            pins[_name(name)] = version.strip()
    return pins


def test_setuptools_package_list_has_no_standin() -> None:
    from setuptools import find_packages

    found = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(REPO), include=found.get("include", ["*"]), exclude=found.get("exclude", ()))
    assert "monitor" in packages and "monitor.probes" in packages
    assert not [p for p in packages if p == "tests.standin" or p.startswith("tests.standin.")], packages


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_built_wheel_holds_no_standin(tmp_path: Path) -> None:
    """`pip wheel .` over exactly what the Docker build stage copies (stand-ins included in the copy)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "monitor", source / "monitor", ignore=shutil.ignore_patterns("__pycache__"))
    assert (REPO / STANDIN / "asgard.py").exists() and not list(source.rglob("standin"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    if done.returncode != 0 and re.search(
        r"Could not (find|fetch)|NewConnectionError|Network is unreachable", done.stderr
    ):
        pytest.skip(f"pip cannot fetch the build backend (setuptools>=68) here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("synthetic_monitor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "monitor/cli.py" in names and "monitor/probes/mlflow/kind.py" in names
    assert not [n for n in names if n.startswith(STANDIN)], [n for n in names if n.startswith(STANDIN)]
    assert not [n for n in names if n.startswith("tests/")]


def _dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for our rules: the last matching rule wins."""
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        if (
            pattern == "**"
            or fnmatch.fnmatchcase(path, pattern)
            or path.startswith(pattern + "/")
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern[3:]))
        ):
            ignored = not negate
    return ignored


def test_docker_build_context_has_no_standin_and_has_the_lock() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        "tests/standin/asgard.py",
        "tests/standin/webhook.py",
        "tests/standin/demo.py",
        "tests/servers.py",
        ".venv/bin/python",
        "monitor/__pycache__/cli.cpython-311.pyc",
    ):
        assert _dockerignored(path, rules), f".dockerignore lets {path} into the image's build context"
    for path in ("pyproject.toml", "README.md", "deploy/constraints.txt", "monitor/cli.py", "monitor/scenario/base.py"):
        assert not _dockerignored(path, rules), f".dockerignore keeps {path} out, the build needs it"


def test_every_dependency_is_pinned_and_installed_from_the_lock() -> None:
    project = _pyproject()["project"]
    pins = _pins()
    wanted = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        wanted += extra
    unpinned = sorted({_name(r) for r in wanted} - set(pins))
    assert not unpinned, f"deploy/constraints.txt lacks a pin for {unpinned}: regenerate it (see its header)"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "deploy/constraints.txt" in dockerfile and "-c /wheels/constraints.txt" in dockerfile
    venv_sh = (REPO / "deploy" / "local" / "venv.sh").read_text()
    assert '-c "$root/deploy/constraints.txt"' in venv_sh
    # This very venv was installed through the lock (tests/run.sh -> venv.sh): the runtime pins hold.
    for requirement in project["dependencies"]:
        name = _name(requirement)
        assert metadata.version(name) == pins[name], f"{name}: installed {metadata.version(name)}, lock {pins[name]}"


@pytest.mark.integration
def test_demo_without_the_standins_is_a_one_line_error() -> None:
    """What an installed wheel does for `synthetic-monitor demo`: exit 2, pointing to the clone."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tests.standin' or name.startswith('tests.standin.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from monitor.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0 and "./deploy/local/demo.sh" in done.stderr, done.stderr
