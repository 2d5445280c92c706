"""The rolling capture: every committed event, decoded and card-masked, per source and shop day, to replay.

An owner tunes rules on last month's data (README, "Tuning on last month"): the daemon appends each event
it committed to ``$STATE_DIRECTORY/history/<source>/<YYYY-MM-DD>.jsonl`` as Event JSON (ARCHITECTURE.md),
which ``settleguard replay --protocol jsonl`` reads as it is. Cards were masked before the event existed
(drivers/boundary.py); nothing here sees more. Capped by ``[history] keep`` (files of older shop days go)
and ``max_mb`` (all sources together: the oldest days go first; a day that alone passes the cap stops
being written until the next). ``settleguard export`` gives the same events from the journal instead.

Written by the pipeline thread after its transaction committed, so a rolled-back item is never in the
capture. A capture is a convenience, not the record: a write that fails (disk full) is logged once and
skipped, never the pipeline's problem.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import date, datetime, tzinfo
from pathlib import Path

from agent.config import HistoryConfig
from drivers.events import Event

log = logging.getLogger("settleguard.history")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")


def source_dir(name: str) -> str:
    """A [[source]] name as a directory name (names are free text; a path separator must not escape)."""
    safe = _UNSAFE.sub("_", name).strip(".") or "_"
    return safe[:100]


class History:
    def __init__(self, directory: Path, settings: HistoryConfig, tz: tzinfo) -> None:
        self.directory = directory
        self.settings = settings
        self.tz = tz
        self._day: date | None = None
        self._bytes = 0                       # all files, as of the last prune plus what was written since
        self._full_day: date | None = None    # a day that alone passed max_mb: not written any more
        self._failed_day: date | None = None  # a write failed this day: logged once

    @property
    def cap(self) -> int:
        return self.settings.max_mb * 1024 * 1024

    def append(self, entries: Iterable[tuple[str, Event, datetime]]) -> None:
        """(source, event, received) committed by the pipeline, in order."""
        by_file: dict[Path, list[str]] = {}
        day = None
        for source, event, received in entries:
            day = received.astimezone(self.tz).date()
            if day != self._day:
                self._day = day
                self.prune(received)
            if self._full_day == day:
                continue
            path = self.directory / source_dir(source) / f"{day.isoformat()}.jsonl"
            by_file.setdefault(path, []).append(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        for path, lines in by_file.items():
            data = "".join(lines).encode("utf-8")
            if self._bytes + len(data) > self.cap:
                self.prune(None)
                if self._bytes + len(data) > self.cap:
                    if self._full_day != day:
                        log.warning("history: over [history] max_mb = %d with today's events alone; not kept "
                                    "until tomorrow", self.settings.max_mb)
                    self._full_day = day
                    return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as fh:
                    fh.write(data)
                self._bytes += len(data)
            except OSError as exc:
                if self._failed_day != day:
                    log.warning("history: cannot write %s: %s (the journal is unaffected)", path, exc.strerror)
                self._failed_day = day

    def files(self) -> list[tuple[date, Path]]:
        """Every day file of every source, oldest first."""
        out: list[tuple[date, Path]] = []
        if not self.directory.is_dir():
            return out
        for sub in self.directory.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                m = _DAY_FILE.match(f.name)
                if m:
                    out.append((date.fromisoformat(m.group(1)), f))
        return sorted(out)

    def prune(self, now: datetime | None) -> None:
        """Files of days older than ``keep`` go (when ``now`` is given); then the oldest, until under max_mb."""
        try:
            files = self.files()
            if now is not None:
                oldest_kept = (now - self.settings.keep).astimezone(self.tz).date()
                for _, f in [x for x in files if x[0] < oldest_kept]:
                    f.unlink(missing_ok=True)
                files = [x for x in files if x[0] >= oldest_kept]
            sizes = [(day, f, f.stat().st_size) for day, f in files]
            total = sum(s for _, _, s in sizes)
            today = self._day
            for day, f, size in sizes:
                if total <= self.cap or day == today:
                    break
                f.unlink(missing_ok=True)
                total -= size
            self._bytes = total
        except OSError as exc:
            log.warning("history: cannot prune %s: %s", self.directory, exc.strerror)
