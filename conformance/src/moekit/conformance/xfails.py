"""The xfails file: test ids an implementation knowingly fails, each with its reason.

Format, one entry a line: ``<test id or id prefix>  # <reason>``; blank lines and lines starting
with ``#`` are ignored. An entry without a reason is an error; an entry that matches no
collected test is warned about (it is stale or misspelt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class XfailEntry:
    pattern: str
    reason: str
    line: int

    def matches(self, nodeid: str) -> bool:
        return (
            nodeid == self.pattern
            or nodeid.endswith("::" + self.pattern)
            or (self.pattern.endswith("*") and self.pattern[:-1] in nodeid)
        )


def parse_xfails(text: str, source: str = "<xfails>") -> list[XfailEntry]:
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise ValueError(f"{source}:{number}: entry {pattern.strip()!r} has no '# reason'")
        entries.append(XfailEntry(pattern.strip(), reason.strip(), number))
    return entries


def load_xfails(path: str | Path | None) -> list[XfailEntry]:
    if path is None:
        return []
    path = Path(path)
    return parse_xfails(path.read_text(), str(path))


def packaged_xfails(adapter_name: str) -> Path | None:
    """The xfails file shipped for an adapter, e.g. ``xfails/moekit.txt`` for ``moekit[...]``."""
    base = adapter_name.split("[")[0]
    path = Path(__file__).parent / "xfails" / f"{base}.txt"
    return path if path.exists() else None
