"""What the code and docs refer to lives in the repository: a fresh clone can follow every
citation of a design note, and the README names only files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"(docs/[\w.-]+\.md)(?:,\s*(?:#\s*)?\"([^\"]+)\")?")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "noxfile.py", ROOT / "manage.py"]
    for folder in ("files_app", "minicloud", "tests", "bench", "docs", "tools"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".html")]
    return files


def test_every_cited_design_note_and_section_exists() -> None:
    cited = 0
    for path in _sources():
        text = path.read_text(errors="replace")
        # Comments wrap: join continued lines before looking for citations.
        text = re.sub(r"\n\s*#\s*", " ", text)
        if path.name != "test_docs.py":
            assert "DESIGN" + ".md" not in text.replace("docs/design.md", ""), path
        for match in CITATION.finditer(text):
            target = ROOT / match.group(1)
            assert target.is_file(), f"{path}: cites {match.group(1)}, which does not exist"
            if match.group(2):
                headings = [
                    line.lstrip("#").strip()
                    for line in target.read_text().splitlines()
                    if line.startswith("#")
                ]
                assert any(h.startswith(match.group(2)) for h in headings), (
                    f"{path}: cites {match.group(1)}, section {match.group(2)!r}: not there"
                )
            cited += 1
    assert cited >= 5


def test_the_readme_names_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", readme):
        assert (ROOT / target).exists(), target
    for target in re.findall(
        r"`((?:files_app|minicloud|tests|bench|docs|tools)/[\w./-]+)`", readme
    ):
        assert (ROOT / target).exists(), target
