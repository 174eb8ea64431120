"""README is a front page: every relative link in it points at a file in the checkout, and every
``#anchor`` at a heading of that file (slugged as MkDocs' toc extension does), so a claim's link
to the page with its command cannot rot. The docs pages themselves are checked by
``mkdocs build --strict`` (``make docs``)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
LINKS = sorted({m for m in re.findall(r"\]\(([^)\s]+)\)", README) if not re.match(r"[a-z]+://", m)})


def slug(heading: str) -> str:
    """Python-Markdown's toc slugify: NFKD to ASCII, drop what is not a word char, space or
    hyphen, lower-case, runs of spaces / hyphens to one hyphen."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(md: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
    return {slug(re.sub(r"`", "", h)) for h in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M)}


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 300
    assert len(LINKS) >= 10  # the claims link out


@pytest.mark.parametrize("link", LINKS)
def test_readme_link_resolves(link):
    path, _, anchor = link.partition("#")
    target = REPO / path if path else REPO / "README.md"
    assert target.exists(), f"README links to {path}, which does not exist"
    if anchor:
        assert anchor in anchors(target), f"{path} has no heading with anchor #{anchor}"


def test_slug_matches_mkdocs_toc():
    from markdown.extensions.toc import slugify

    for h in [
        "Face crops: what each backbone was trained on",
        "The demo corpus",
        "Clip-level video features for JCA: face_r2plus1d",
    ]:
        assert slug(h) == slugify(h, "-")
