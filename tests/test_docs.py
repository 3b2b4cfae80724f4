"""The documentation: README stays short, and every relative link (and #anchor) in README.md,
MODEL_CARD.md and docs/*.md resolves; the README's command -> module map matches the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); a target ends at the first space (an optional "title" follows)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed (letters of any
    script, digits, `_` and `-` kept), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[`*]|<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; repeats get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code blocks and inline code."""
    found = []
    for line in _prose(path.read_text(encoding="utf-8")):
        found += LINK.findall(INLINE_CODE.sub("", line))
    return found


def broken_links(path: Path) -> list[str]:
    """'target: why' for each relative link of `path` that does not resolve."""
    bad = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert links(page) or page.name != "README.md", "no links found in README.md: the link parser is broken"
    bad = broken_links(page)
    assert not bad, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_readme_is_short_and_links_every_docs_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): " \
                                           "move details into docs/"
    linked = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    orphans = [p.name for p in PAGES if p.parent.name == "docs" and f"docs/{p.name}" not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_readme_command_map_matches_the_cli():
    from pokemon_classifier.cli import COMMANDS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("Commands and their modules")
    mapped = dict(re.findall(r"`([a-z]+)` → ([\w/]+)\.py", text[start:text.index("\n\n", start)]))
    want = {cmd: mod.removeprefix("pokemon_classifier.").replace(".", "/") for cmd, (mod, _) in COMMANDS.items()}
    assert mapped == want, f"README.md's command map {mapped} != the CLI's {want}"


# ---------------------------------------------------------------- the checker itself catches breakage

def test_slugs_follow_github():
    assert slug('"Unknown": pictures that are not Gen-1 Pokémon') == "unknown-pictures-that-are-not-gen-1-pokémon"
    assert slug("Model card: `best.pt`") == "model-card-bestpt"
    assert slug("Results (group-aware test split of the corrected data, 996 images)") == \
        "results-group-aware-test-split-of-the-corrected-data-996-images"
    assert slug("v2.1: a larger calibration slice (shipped, 2026-11-30)") == \
        "v21-a-larger-calibration-slice-shipped-2026-11-30"


def test_a_broken_file_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Twice\n\n## Twice\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#a-page) [ok](docs/a.md#twice-1) ![img](docs/a.md)\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#not-a-heading) [self](#nowhere)\n"
                    "`[in code](nowhere.md)` [web](https://example.org/x.md)\n"
                    "```\n[in a block](nowhere.md)\n```\n")
    bad = broken_links(page)
    assert [b.split(":")[0] for b in bad] == ["docs/b.md", "docs/a.md#not-a-heading", "#nowhere"], bad
