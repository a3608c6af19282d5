"""The documents a user reads stand alone: every link they hold leads to a file of the project."""

from __future__ import annotations

import re
from pathlib import Path

from .helpers import REPO

_LINK = re.compile(r"\]\(([^)\s]+)\)")
# Files the project does not contain (the team's working notes live elsewhere).
_OUTSIDE = re.compile(r"\bDESIGN\.md\b|\bSTYLE\.md\b|/work/shared")


def user_documents() -> list[Path]:
    docs = [REPO / "README.md", *sorted((REPO / "samples").glob("*.md"))]
    docs += sorted((REPO / "docs").rglob("*.md")) if (REPO / "docs").is_dir() else []
    return docs


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a markdown text."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_user_documents_point_only_at_files_of_the_project():
    problems = []
    for doc in user_documents():
        text = doc.read_text(encoding="utf-8")
        for hit in _OUTSIDE.finditer(text):
            problems.append(f"{doc.relative_to(REPO)} mentions {hit.group(0)}, which the project does not contain")
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # an absolute URL
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists() or REPO not in file.parents:
                problems.append(f"{doc.relative_to(REPO)} links to {target}, which is not a file of the project")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
                problems.append(f"{doc.relative_to(REPO)} links to {target}, which has no such section")
    assert not problems, "\n".join(problems)
