"""Sans-I/O protocol decoders: bytes in, typed events out.

``make_decoder(name, tz=..., **options)`` is the one place that maps a
protocol name to its decoder; ``sniff(data)`` guesses the protocol from the
first bytes of a stream (gpsd style) for ``--protocol auto``.
"""

from __future__ import annotations

from datetime import tzinfo
from importlib import import_module
from typing import Any

from drivers.protocols.base import Decoder, DecoderStats

PROTOCOLS: dict[str, str] = {
    "jsonl": "drivers.protocols.jsonl:JsonlDecoder",
    "zvt": "drivers.protocols.zvt:ZvtDecoder",
    "cn_ecr": "drivers.protocols.cn_ecr:CnEcrDecoder",
    "escpos": "drivers.protocols.escpos:EscposEventDecoder",
}


class UnknownProtocol(ValueError):
    pass


def make_decoder(name: str, *, tz: tzinfo, source: str | None = None, **options: Any) -> Decoder:
    try:
        target = PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)}, auto)") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(import_module(module_name), cls_name)
    decoder: Decoder = cls(tz=tz, source=source, **options)
    return decoder


def sniff(data: bytes) -> str | None:
    """Guess the protocol from the first bytes; None when it cannot tell yet."""
    head = data.lstrip(b"\x06\x15\r\n\t ")[:64]
    if not head:
        return None
    if head[:1] == b"{":
        return "jsonl"
    if head[:2] == b"\x10\x02":
        return "zvt"
    if head[:1] == b"\x02" and len(head) >= 4 and head[3:5] in (b"\xdf\x01", b"\xdf\x02"):
        return "cn_ecr"
    if head[:2] in (b"\x1b\x40", b"\x1b\x74", b"\x1b\x21", b"\x1c\x26", b"\x1b\x61", b"\x1d\x21"):
        return "escpos"
    # Raw ZVT APDUs (TCP transport): class/instr pairs a terminal sends.
    if head[:2] in (b"\x04\x0f", b"\x04\xff", b"\x06\x0f", b"\x06\x1e", b"\x06\xd1", b"\x06\xd3", b"\x80\x00",
                    b"\x84\x00", b"\x06\x50"):
        return "zvt"
    if head[:1] == b"\x02":
        return "cn_ecr"
    return None


__all__ = ["PROTOCOLS", "Decoder", "DecoderStats", "UnknownProtocol", "make_decoder", "sniff"]
