"""Every ```python block of the docs and of the package READMEs runs, page by page (later blocks of a page see the names of
earlier ones). A block right after a line ``<!-- no-test: reason -->`` is skipped (GPU-only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- no-test[^>]*-->\s*\n)?```python\n(.*?)```", re.DOTALL)
ROOT = DOCS.parent
# the docs pages, and the package READMEs a package index shows
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_tests" not in p.parts) + sorted(
    [*ROOT.glob("packages/*/README.md"), ROOT / "reference" / "README.md",
     ROOT / "conformance" / "README.md"]
)  # fmt: skip


def blocks(page: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of each block to run."""
    text = page.read_text()
    found = []
    for match in BLOCK.finditer(text):
        if match.group(1) is None:
            found.append((text[: match.start(2)].count("\n") + 1, match.group(2)))
    return found


def test_every_page_is_collected():
    assert len(PAGES) >= 10, PAGES
    assert sum(len(blocks(p)) for p in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks(page):
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}, block at line {line}: {error!r}") from error
