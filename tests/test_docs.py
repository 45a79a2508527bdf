"""The manual: `mkdocs build --strict` passes, the runbook holds every anchor the code links to,
and the README stays a short front page whose links resolve.

The build runs in CI through this test (tests/run.sh -> pytest): a broken link, a page left
out of `nav`, or a link to a missing heading fails it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.alerting import alerts
from monitor.alerting.quorum import PROBE_FAILING_ONE_LOCATION
from monitor.diagnosis import runbook_anchor
from monitor.scenario.registry import KINDS

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from the working tree with --strict (a warning is an error)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": str(Path(sys.executable).parent), "NO_MKDOCS_2_WARNING": "1", "HOME": str(out)},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _ids(html: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html.read_text(encoding="utf-8")))


def _yaml_strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _yaml_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _yaml_strings(value)
    elif isinstance(node, str):
        yield node


def rule_runbook_anchors() -> set[str]:
    """The fragment of every runbook_url in the shipped rules (alert and SLO rules, the PrometheusRule)."""
    files = [
        *(REPO / "deploy" / "prometheus").glob("*.yml"),
        REPO / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml",
    ]
    anchors = set()
    for path in files:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for text in _yaml_strings(document):
                for url in re.findall(r"https?://\S*runbook\S*#([\w-]+)", text):
                    anchors.add(url)
    return anchors


def _names(values: object) -> set[str]:
    """Component names from whatever a kind declares: names, or objects with a `name`."""
    if values is None:
        return set()
    if isinstance(values, str):
        return {values}
    if isinstance(values, dict):
        return set(values)
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        return set()
    names = set()
    for item in items:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, tuple) and item and isinstance(item[0], str):  # (name, severity)
            names.add(item[0])
        elif isinstance(getattr(item, "name", None), str):
            names.add(item.name)
    return names


def diagnosis_components() -> set[str]:
    """Every component a diagnosis can name: the core's and what each registered kind declares."""
    import monitor.diagnosis
    import monitor.results

    found: set[str] = set()
    for module in (monitor.results, monitor.diagnosis):
        for attribute in ("COMPONENTS", "GENERIC_COMPONENTS", "CORE_COMPONENTS"):
            found |= _names(getattr(module, attribute, None))
    for kind in KINDS.values():
        for attribute in ("server_component", "components"):
            found |= _names(getattr(kind, attribute, None))
    return found


def code_runbook_anchors() -> set[str]:
    """Anchors the daemon itself links to: `runbook_url#<alertname>` and `#diagnosis-<component>`,
    for the core's alerts and those a kind declares."""
    names = {
        *_names(getattr(alerts, "ALERT_NAMES", ())),
        *_names(getattr(alerts, "SEVERITY", ())),
        PROBE_FAILING_ONE_LOCATION,
    }
    for kind in KINDS.values():
        names |= _names(getattr(kind, "alerts", None))
    return {n.lower() for n in names} | {runbook_anchor(c) for c in diagnosis_components()}


@pytest.mark.integration
def test_mkdocs_build_strict_passes(site: Path) -> None:
    assert (site / "index.html").is_file() and (site / "runbook.html").is_file()
    assert (site / "configuration.html").is_file(), "the generated configuration reference is part of the site"
    assert not (site / "_incoming").exists(), "drafts in docs/_incoming/ must stay out of the site"


def test_incoming_drafts_are_excluded_from_the_site() -> None:
    from mkdocs.config import load_config

    config = load_config(str(REPO / "mkdocs.yml"))
    assert config["exclude_docs"].match_file("_incoming/some-branch.md")
    assert not config["exclude_docs"].match_file("runbook.md")
    assert config["theme"].name == "material"


def test_the_anchor_collectors_find_what_the_code_links_to() -> None:
    rules = rule_runbook_anchors()
    assert {"syntheticprobefailing", "syntheticmonitordown", "syntheticprobeerrorbudgetburn"} <= rules
    code = code_runbook_anchors()
    assert {"syntheticprobetimeout", "diagnosis-monitor", "diagnosis-network"} <= code
    assert len(diagnosis_components()) >= 5


@pytest.mark.integration
def test_runbook_has_every_anchor_the_alerts_and_diagnoses_link_to(site: Path) -> None:
    ids = _ids(site / "runbook.html")
    wanted = rule_runbook_anchors() | code_runbook_anchors()
    missing = sorted(wanted - ids)
    assert not missing, f"docs/runbook.md lacks the anchors {missing} (add a heading with {{#anchor}})"


def test_readme_is_a_short_front_page_with_links_that_resolve() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"
    for command in ("./deploy/local/demo.sh", "./tests/run.sh"):
        assert command in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10, local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    linked = {Path(link).name for link in local if link.startswith("docs/")}
    assert linked == pages - {"performance-history.md"}, f"pages the README does not list: {sorted(pages - linked)}"


def test_every_repository_path_the_manual_names_exists() -> None:
    """A moved or renamed file (the layout changes) leaves no stale path in the README or the pages."""
    pattern = re.compile(r"(?<![\w/.$-])((?:monitor|tests|deploy|docs)/[\w./-]*[\w/])")
    missing = set()
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for path in pattern.findall(page.read_text(encoding="utf-8")):
            if not (REPO / path).exists() and not path.startswith("docs/_incoming"):  # drafts come and go
                missing.add(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(sorted(missing))
