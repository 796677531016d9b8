"""The README's own links: every ``](#anchor)`` names a heading (GitHub's slugs) and every
relative link a file of the repository (a link to ``#dashboard-page`` pointed nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of the headings outside code blocks: lower case, punctuation
    other than ``-`` and ``_`` dropped, spaces as ``-``, ``-1``, ``-2``... for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = re.match(r"#{1,6} (.+)", line)
        if in_code or heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        anchors.add(slug)
    return anchors


def test_github_anchors_follow_githubs_rules() -> None:
    """The slug rules on headings like the README's."""
    text = "# A\n## `GET /metrics/dashboard`: the page\n```\n# not a heading\n```\n## A\n"
    assert github_anchors(text) == {"a", "get-metricsdashboard-the-page", "a-1"}


def test_readme_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = github_anchors(readme)
    links = re.findall(r"\]\(#([^)\s]+)\)", readme)
    assert links, "no in-page links found: the pattern is wrong"
    assert [link for link in links if link not in anchors] == []
    files = re.findall(r"\]\((?!#|https?:|mailto:)([^)\s#]+)", readme)
    assert [path for path in files if not (ROOT / path).exists()] == []
