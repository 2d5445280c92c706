"""What travels on the pipeline's one queue, and what the pipeline tells its listeners.

Readers put :class:`EventBatch` items on the queue; scheduler jobs, the control
socket and the CLI put :class:`Command` items. After each commit the pipeline
hands :class:`AlertChange`, :class:`ReviewNotice` and :class:`BatchClosed` to
its listeners (demo console, replay printer, metrics).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.alerts.lifecycle import NoticeKind
from agent.model import Alert, Event
from drivers.events import Rejected


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events one decoder call produced, in order (a receipt followed by its transaction).

    ``ack``, when set, is called by the pipeline once the batch is committed to the journal (and
    never when it rolled back): a spool job is moved to done/ only then. A batch may carry no
    events and only the ack (a job that decoded to nothing, or whose events went in earlier batches:
    the queue is FIFO, so those are committed by then).
    """

    source: str
    events: tuple[Event, ...]
    received: datetime
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    # What the decoder's boundary refused in the same read (drivers/boundary.py): the pipeline keeps
    # these in the journal's quarantine, in the same transaction as the events around them.
    rejected: tuple[Rejected, ...] = ()
    # Every event already passed a decoder's boundary limits (replay of decoded captures): not checked again.
    checked: bool = False


@dataclass(slots=True)
class Command:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    reply: queue.Queue[Any] | None = None


STOP = Command("stop")


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Handed to listeners after commit (demo console, replay printer, metrics)."""

    alert: Alert
    notice: NoticeKind   # one of lifecycle.ALERT_NOTICES
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReviewNotice:
    """The pre-close review (or the all-clear) as it went out."""

    at: datetime
    alerts: tuple[Alert, ...]
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class BatchClosed:
    at: datetime
    terminal_id: str | None
    batch_no: str | None
    reason: str          # settlement event | cutoff
