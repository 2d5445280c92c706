"""Building blocks for the benchmarks that run the real daemon: config text, card numbers, duplicate pairs."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

from agent.sim.day import luhn_complete
from agent.sim.rig import shop_config
from agent.sim.terminal import encode_event
from drivers.events import Transaction


def config_text(*, device: str, url: str, secret: str, protocol: str = "cn_ecr") -> str:
    return shop_config(name="基准测试店", till="bench-1", device=device, url=url, secret=secret, protocol=protocol)


def write_config(path: Path, **kw: str) -> Path:
    path.write_text(config_text(**kw), encoding="utf-8")
    return path


def full_pan(rng: random.Random) -> str:
    """A Luhn-valid 16-digit number, as a terminal holds it (the decoder must mask it)."""
    return luhn_complete("622576" + "".join(str(rng.randrange(10)) for _ in range(9)))


def sale(voucher: int, *, card: str, amount_minor: int, when: datetime, batch_no: str = "000200") -> Transaction:
    return Transaction(source="sim", kind="sale", result="approved", amount_minor=amount_minor, time=when,
                       terminal_id="15221155", merchant_id="104152253311021", batch_no=batch_no,
                       voucher_no=f"{voucher:06d}", trace_no=f"{voucher % 1_000_000:06d}",
                       rrn=f"{voucher:012d}", auth_code="123456", currency="CNY", card=card, card_type="UnionPay",
                       entry_mode="chip", operator="01")


def frame(txn: Transaction, protocol: str = "cn_ecr") -> bytes:
    return encode_event(protocol, txn)
