"""The operator-facing docs that the alerts link to: links resolve, every alert is described.

The runbook, operations and architecture pages are where an alert's runbook_url sends
someone at 3 a.m.; a dead link or a missing section there is a defect like a broken rule.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
OWNED_DOCS = ["runbook.md", "operations.md", "architecture.md"]
RULES = REPO / "alerts" / "cricalgo-alerts.yaml"


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            text = re.sub(r"[`*_]", "", match.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def relative_links(markdown: str) -> list[str]:
    """Targets of Markdown links that point inside the repository (outside code blocks)."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("page", OWNED_DOCS)
def test_relative_links_and_anchors_resolve(page: str) -> None:
    source = DOCS / page
    links = relative_links(source.read_text())
    assert links, f"{page} links nowhere"
    for link in links:
        path_part, _, anchor = link.partition("#")
        target = (source.parent / path_part).resolve() if path_part else source
        assert target.exists(), f"{page}: link to missing file {link}"
        if anchor:
            assert anchor in github_anchors(target.read_text()), f"{page}: dead anchor {link}"


def test_operations_lists_every_alert() -> None:
    operations = (DOCS / "operations.md").read_text()
    missing = [name for name in alert_names() if f"runbook.md#{name.lower()}" not in operations]
    assert not missing, f"docs/operations.md does not list: {missing}"


def test_runbook_covers_the_manual_controls() -> None:
    runbook = (DOCS / "runbook.md").read_text()
    for command in ("promote", "abort", "pause", "resume", "retry"):
        assert f"kubectl cricalgo {command} NAME" in runbook, command
    for control in ("cricalgo.io/promote", "cricalgo.io/abort", "cricalgo.io/retry"):
        assert control in runbook, control
    assert "spec.canary.paused" in runbook
    assert "helm -n NS rollback" in runbook


def test_architecture_has_a_diagram() -> None:
    architecture = (DOCS / "architecture.md").read_text()
    assert "```mermaid" in architecture
    diagram = architecture.split("```mermaid", 1)[1].split("```", 1)[0]
    for node in ("CricAlgoDeployment", "Deployments", "Services", "HPAs", "VirtualService"):
        assert node in diagram, node
    for step in ("Prometheus", "analysis", "decide", "weight"):
        assert step in diagram, step


def test_anchor_generation_matches_github() -> None:
    text = (
        "# Runbook: canary rollouts\n## Manual controls: promote, abort\n```\n# not a heading\n```"
    )
    assert github_anchors(text) == {"runbook-canary-rollouts", "manual-controls-promote-abort"}
