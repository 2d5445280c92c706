"""A benchmark writes its own table into BENCHMARKS.md between marker comments, and nothing else there.

    <!-- bench:NAME begin -->  ...generated...  <!-- bench:NAME end -->

The markers are added (at the end of the file) the first time; other helpers' tables are left as they are.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, name: str, body: str, *, heading: str | None = None) -> None:
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        title = f"\n## {heading}\n\n" if heading else "\n"
        text = text.rstrip("\n") + "\n" + title + block + "\n"
    path.write_text(text, encoding="utf-8")
