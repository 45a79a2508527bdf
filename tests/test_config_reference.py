"""docs/configuration.md is generated from the pydantic models (python -m monitor.config.reference).

It must equal a fresh rendering, list every key the models accept (checked against
pydantic's own JSON schema, an independent walk), and pick up a new field generically.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from monitor.config import Config, reference
from monitor.config.common import Duration, Model
from monitor.scenario.registry import SCENARIOS

REPO = Path(__file__).resolve().parents[1]


def _schema_keys(schema: dict[str, Any], node: dict[str, Any], prefix: str) -> set[str]:
    """Every dotted key under `node` of a JSON schema: `alerting.receivers[].url`, ..."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    keys: set[str] = set()
    for option in node.get("anyOf", []):
        keys |= _schema_keys(schema, option, prefix)
    if node.get("type") == "array" and "items" in node:
        keys |= _schema_keys(schema, node["items"], prefix + "[]")
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        keys.add(key)
        keys |= _schema_keys(schema, child, key)
    return keys


def _rows() -> list[reference.Row]:
    return [row for section in reference.sections() for row in section.rows]


def test_committed_reference_is_fresh() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference.render(), "docs/configuration.md is stale: run python -m monitor.config.reference"


@pytest.mark.integration
def test_check_mode_passes_on_the_committed_file_and_fails_on_a_stale_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "monitor.config.reference"]
    proc = subprocess.run([*command, "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.render().replace("| `listen` |", "| `listen_old` |"), encoding="utf-8")
    proc = subprocess.run([*command, "--check", "--output", str(stale)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "is stale" in proc.stderr
    proc = subprocess.run([*command, "--output", str(stale)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and stale.read_text(encoding="utf-8") == reference.render()


def test_every_key_of_the_models_is_listed() -> None:
    schema = Config.model_json_schema(mode="validation")
    expected = _schema_keys(schema, schema, "")
    for scenario in SCENARIOS.values():
        options = scenario.options_model.model_json_schema(mode="validation")
        expected |= _schema_keys(options, options, "probes[].options")
    listed = {row.key for row in _rows()}
    assert "alerting.receivers[].url" in expected and "slo.latency.threshold" in expected  # the walk works
    assert expected - listed == set(), f"keys missing from the reference: {sorted(expected - listed)}"
    assert listed - expected == set(), f"keys the models do not accept: {sorted(listed - expected)}"


def test_a_new_field_shows_up_with_type_default_and_description() -> None:
    class Extra(Model):
        """A section someone adds tomorrow."""

        # Comment above the field: its description.
        pause: Duration = 90.0
        mode: int = Field(default=3, ge=1, description="From Field(description=...).")
        plain: str | None = None

    class Root(Model):
        extra: Extra = Extra()

    sections = list(reference.walk(Root, "", "Top level"))
    rows = {row.key: row for section in sections for row in section.rows}
    assert rows["extra.pause"] == reference.Row(
        "extra.pause", "duration", "`90s`", "Comment above the field: its description."
    )
    assert rows["extra.mode"] == reference.Row("extra.mode", "integer (>= 1)", "`3`", "From Field(description=...).")
    assert rows["extra.plain"].type == "string or null" and rows["extra.plain"].default == "none"
    assert rows["extra"].description == "A section someone adds tomorrow."
    assert "[section](#extra)" in rows["extra"].type and sections[1].anchor == "extra"


def test_defaults_and_types_read_as_the_yaml_is_written() -> None:
    rows = {row.key: row for row in _rows()}
    assert (
        rows["alerting.startup_grace"].type.startswith("duration") and rows["alerting.startup_grace"].default == "`1m`"
    )
    assert rows["targets[].auth.password"].type == "string (secret) or null"
    assert rows["listen"].default == '`"0.0.0.0:9356"`'
    assert rows["probes"].default == "required"
    assert rows["log.format"].type == 'one of `"json"`, `"console"`, `"auto"`'
    assert rows["alerting.runbook_url"].description  # a comment in monitor/config/alerting.py
