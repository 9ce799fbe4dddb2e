"""Every cross-reference resolves inside the repository: relative links (and their #sections) of the
README, data/README and docs/, and every docs/ file cited by a config or a docstring. No citation of
a document the repository does not hold (the specification and the recipe live in docs/)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("ila_fast", "data", "train", "kernels", "slurm", "bench", "tests", "configs")
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_CITATION = re.compile(r"(?<![\w/.-])docs/[\w./-]*\w\.(?:md|png|svg|json)(?:#[\w-]+)?")
# spelt in two pieces so that this file does not cite them itself
FORBIDDEN = (re.compile(r"spec" + r" sections? \d"), re.compile(r"ila-" + r"reference\.md"))


def markdown_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def code_files() -> list[Path]:
    files = []
    for folder in CODE_FOLDERS:
        files += [p for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".py", ".toml", ".md", ".sh")
                  and ".venv" not in p.parts and "__pycache__" not in p.parts]
    return files


def without_code_blocks(text: str) -> str:
    """Markdown outside ``` fences (a shell comment in a fence is no heading, a path in one no link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in without_code_blocks(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def check_target(source: Path, target: str, base: Path) -> str | None:
    """None when ``target`` (a path, maybe with #anchor, relative to ``base``) is in the repository."""
    path_part, _, anchor = target.partition("#")
    resolved = (base / path_part).resolve() if path_part else source
    where = f"{source.relative_to(REPO)}: {target}"
    if REPO not in resolved.parents and resolved != REPO:
        return f"{where} points outside the repository"
    if not resolved.exists():
        return f"{where} does not exist"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{where}: no section #{anchor} in {resolved.relative_to(REPO)}"
    return None


def test_the_specification_and_the_recipe_are_in_docs():
    assert (REPO / "docs" / "specification.md").is_file()
    assert (REPO / "docs" / "recipe.md").is_file()


def test_relative_links_of_the_markdown_resolve():
    problems, checked = [], 0
    for md in markdown_files():
        for target in MARKDOWN_LINK.findall(without_code_blocks(md.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            checked += 1
            problems.append(check_target(md, target, md.parent))
    assert checked >= 8  # the pattern finds the links at all
    assert [p for p in problems if p] == []


def test_docs_cited_by_code_configs_and_docs_exist():
    problems, checked = [], 0
    for path in code_files() + markdown_files():
        for target in DOCS_CITATION.findall(path.read_text()):
            checked += 1
            problems.append(check_target(path, target, REPO))
    assert checked > 10
    assert [p for p in problems if p] == []


@pytest.mark.parametrize("pattern", FORBIDDEN, ids=lambda p: p.pattern)
def test_no_citation_of_documents_outside_the_repository(pattern):
    hits = [f"{p.relative_to(REPO)}:{n}" for p in [REPO / "README.md", *code_files(), *markdown_files()]
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_the_link_check_catches_a_broken_link(tmp_path):
    """The checker itself: a missing file and a missing section are both reported."""
    md = REPO / "docs" / "specification.md"
    assert check_target(md, "recipe.md#no-such-section", md.parent) is not None or \
        not (REPO / "docs" / "recipe.md").is_file()
    assert check_target(md, "no_such_page.md", md.parent) is not None
    assert check_target(md, "#31-one-block", md.parent) is None
    assert check_target(md, "#31-no-block", md.parent) is not None
    assert slug("Sampling ([the recipe](../docs/recipe.md)), from the plan") == "sampling-the-recipe-from-the-plan"


def test_readme_lists_each_configs_official_checkpoint_and_clip_file():
    """README's weights tables say what `ila-fast zoo --weights` says, for every zoo config."""
    from ila_fast.zoo import ZOO, weights_table

    readme = (REPO / "README.md").read_text()
    rows = weights_table()
    assert [r["name"] for r in rows] == [e.config for e in ZOO] and len(rows) == 10
    assert len({r["official_url"] for r in rows}) == 10  # ten different files
    for r in rows:
        assert f"| `{r['name']}` | [Google Drive]({r['official_url']}) | `{r['convert']}` |" in readme
        assert f"[{r['clip_file']}]({r['clip_url']})" in readme
        assert r["convert"].startswith(f"ila-fast convert {r['name']}_official.pth {r['name']}.pth --config {r['name']}")
