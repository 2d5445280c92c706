"""Plays a simulated day onto a wire: a pty pair, a serial port, or a file.

Encoding a day into protocol bytes is protocol knowledge, so it asks the
decoders' own encoder helpers (``drivers.protocols.*``); this module only
decides *when* bytes go out.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import BinaryIO

from agent.model import Settlement, Transaction, event_to_json
from agent.sim.day import SimEvent
from drivers.events import EcrRequest, Order

PROTOCOLS = ("jsonl", "zvt", "cn_ecr", "escpos")


def encode_event(protocol: str, event: Transaction | Settlement | Order | EcrRequest, *,
                 reprint: bool = False) -> bytes:
    """The bytes a terminal (or a till's printer stream) would send for one event."""
    if isinstance(event, Order):
        # The till's sale (a both-wires day): its printed 小票 or its JSON line; a terminal protocol has none.
        from agent.sim import wire_till

        return wire_till.encode(event, protocol)
    if protocol == "jsonl":
        return (event_to_json(replace(event, source="jsonl")) + "\n").encode("utf-8")
    if isinstance(event, EcrRequest):
        raise ValueError(f"the simulator writes the till's ECR requests on a jsonl wire only (not {protocol})")
    if protocol == "zvt":
        from agent.sim import wire_zvt

        return wire_zvt.encode(event)
    if protocol == "cn_ecr":
        from agent.sim import wire_cn_ecr

        return wire_cn_ecr.encode(event)
    if protocol == "escpos":
        from agent.sim import wire_escpos

        return wire_escpos.encode(event, reprint=reprint)
    raise ValueError(f"the simulator does not speak {protocol!r} (known: {', '.join(PROTOCOLS)})")


def encode_day(protocol: str, events: Iterable[SimEvent]) -> bytes:
    return b"".join(encode_event(protocol, e.event, reprint=e.reprint) for e in events)


def play(events: list[SimEvent], write: Callable[[bytes], None], protocol: str, *, speed: float = 0.0,
         max_gap: float = 2.0, sleep: Callable[[float], None] = time.sleep,
         on_event: Callable[[SimEvent], None] | None = None) -> int:
    """Write each event's bytes, pacing by the day's clock divided by ``speed`` (0 = as fast as possible).

    Gaps are capped at ``max_gap`` seconds of real time so a quiet afternoon
    does not stall a demo.
    """
    previous = None
    sent = 0
    for ev in events:
        if speed > 0 and previous is not None:
            gap = (ev.at - previous).total_seconds() / speed
            if gap > 0:
                sleep(min(gap, max_gap))
        previous = ev.at
        write(encode_event(protocol, ev.event, reprint=ev.reprint))
        sent += 1
        if on_event:
            on_event(ev)
    return sent


class PtyTerminal:
    """A pty pair: the agent opens ``device`` like a serial port; we write to the master."""

    def __init__(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: a serial line carries bytes as they are
        self.device = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def write_file(out: BinaryIO, events: list[SimEvent], protocol: str) -> int:
    for ev in events:
        out.write(encode_event(protocol, ev.event, reprint=ev.reprint))
    return len(events)
