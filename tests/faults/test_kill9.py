"""kill -9 at random points while a terminal is charging cards through a pty.

What a crash may cost, stated precisely (a serial line has no replay):

* bytes written while the daemon is down are lost at the pty (the port is
  flushed when it is reopened), and so are bytes it had read but not yet
  committed when it died;
* everything else is kept: a transaction written while the daemon was up,
  more than ``GRACE`` seconds before a kill, is in the journal, and every
  transaction in the journal is there exactly once (one sighting: nothing is
  read twice across a restart);
* a duplicate charge whose two halves are in the journal has its DUP-001
  alert (the alert commits with the transaction that raised it);
* every alert revision in the outbox is delivered at least once, and a
  receiver that deduplicates on webhook-id sees each exactly once.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

from agent.sim.rig import CHANNEL, ShopRig
from drivers.clock import SYSTEM_CLOCK
from tests.faults.support import FULL, DaemonProcess, Till, journal, vouchers_in_journal
from tests.helpers import wait_until

TRANSACTIONS = 5000 if FULL else 300
KILLS = 20 if FULL else 3
GRACE = 0.25  # seconds: reading, decoding and committing one frame takes milliseconds; this is generous


def test_kill9_at_random_points_loses_no_committed_transaction_and_no_alert(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    rig = ShopRig(name="故障测试店", till="faults-1", state=tmp_path / "state")
    sink, term = rig.sink, rig.terminal
    daemon = DaemonProcess(rig.write_config(tmp_path / "settleguard.toml"), rig.state)
    till = Till(term.write)
    kills: list[float] = []
    down: set[str] = set()
    torn: set[str] = set()
    # Kill points: after a random number of transactions each; sometimes in the middle of a frame.
    points = sorted(rng.sample(range(20, TRANSACTIONS - 20), KILLS))
    try:
        daemon.start()
        for voucher_index in range(TRANSACTIONS):
            if points and voucher_index == points[0]:
                points.pop(0)
                if rng.random() < 0.5:
                    voucher, data = till.sale()
                    term.write(data[:rng.randrange(1, len(data))])  # the rest never comes
                    torn.add(voucher)
                kills.append(SYSTEM_CLOCK.monotonic())
                daemon.kill9()
                for _ in range(rng.randrange(0, 3)):
                    down.add(till.send())  # nobody is listening: these are lost at the pty
                daemon.start()
                continue
            till.send()
            time.sleep(0.002)
        everything = set(till.written) - down - torn
        # The last writes are well clear of any kill: wait for them, then for delivery to drain.
        wait_until(lambda: set(vouchers_in_journal(daemon.state)) >= everything - _near_kills(till, kills),
                   "every charge away from a kill journalled (did the daemon stop reading?)", timeout=30)

        def outbox_drained() -> bool:
            with closing(journal(daemon.state)) as conn:
                return conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").fetchone()[0] == 0
        wait_until(outbox_drained, "every alert delivered", timeout=60)
        assert daemon.stop() == 0
    finally:
        daemon.close()
        rig.close()

    seen = vouchers_in_journal(daemon.state)
    must_have = set(till.written) - down - torn - _near_kills(till, kills)
    missing = sorted(must_have - set(seen))
    assert not missing, f"{len(missing)} transactions written while the daemon was up are lost: {missing[:10]}"
    read_twice = {v: n for v, n in seen.items() if n != 1}
    assert not read_twice, f"transactions recorded more than once across restarts: {read_twice}"
    assert not torn & set(seen), "a frame cut by the kill must not turn into a transaction"

    with closing(journal(daemon.state)) as conn:
        alerts = conn.execute("SELECT id, rule, subject_voucher FROM alerts").fetchall()
        outbox = conn.execute("SELECT message_id, state FROM outbox WHERE channel = ?", (CHANNEL,)).fetchall()
    flagged = {a["subject_voucher"] for a in alerts if a["rule"] == "DUP-001"}
    for dup, first in till.duplicates.items():
        if dup in seen and first in seen:
            assert dup in flagged, f"duplicate charge {dup} (of {first}) is in the journal without its alert"
    message_ids = {r["message_id"] for r in outbox}
    assert all(r["state"] == "sent" for r in outbox)
    assert message_ids <= sink.seen_ids, f"alerts never delivered: {sorted(message_ids - sink.seen_ids)[:5]}"
    assert Counter(r.webhook_id for r in sink.received).most_common(1)[0][1] == 1
    assert {r.webhook_id for r in sink.received} == message_ids, "the receiver got an alert the journal lacks"
    _report(tmp_path, till=till, seen=seen, kills=kills, down=down, torn=torn, alerts=len(alerts),
            deliveries=sink.requests, unique=len(sink.received), starts=daemon.starts)


def _near_kills(till: Till, kills: list[float]) -> set[str]:
    """Transactions written in the last GRACE seconds before a kill: the daemon may have died holding them."""
    return {v for v, t in till.written.items() if any(0 <= k - t <= GRACE for k in kills)}


def _report(tmp_path: Path, **facts: object) -> None:
    """Figures for BENCHMARKS.md (bench/out/faults-kill9.json when run by the bench)."""
    till = facts["till"]
    seen = facts["seen"]
    assert isinstance(till, Till) and isinstance(seen, dict)
    near = _near_kills(till, facts["kills"])  # type: ignore[arg-type]
    summary = {"transactions_written": len(till.written), "kills": len(facts["kills"]),  # type: ignore[arg-type]
               "daemon_starts": facts["starts"], "written_while_down": len(facts["down"]),  # type: ignore[arg-type]
               "frames_cut_by_kill": len(facts["torn"]),  # type: ignore[arg-type]
               "in_journal": len(seen), "written_within_grace_of_a_kill": len(near),
               "lost_within_grace": len(near - set(seen)),
               "longest_loss_window_s": max((min(k - till.written[v] for k in facts["kills"]  # type: ignore[attr-defined]
                                                 if k >= till.written[v])
                                             for v in near - set(seen)), default=0.0),
               "lost_while_down": len(set(facts["down"]) - set(seen)),  # type: ignore[call-overload]
               "alerts": facts["alerts"], "webhook_requests": facts["deliveries"],
               "unique_webhook_ids": facts["unique"]}
    out = Path(__file__).resolve().parents[2] / "bench" / "out"
    if FULL:
        out.mkdir(parents=True, exist_ok=True)
        (out / "faults-kill9.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(summary)
