"""Sans-I/O protocol decoders: bytes in, typed events out.

:func:`build_decoder` is the one place that turns a protocol name and a source's options into a
decoder; the daemon, ``replay`` and ``decode`` all call it, so the same bytes and options give the
same events everywhere. ``"auto"`` sniffs the protocol from the first bytes (:mod:`.sniff`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from importlib import import_module
from typing import Any

from drivers.boundary import BoundaryDecoder
from drivers.protocols.base import Decoder, DecoderStats
from drivers.protocols.sniff import SniffingDecoder, sniff

PROTOCOLS: dict[str, str] = {
    "jsonl": "drivers.protocols.jsonl:JsonlDecoder",
    "zvt": "drivers.protocols.zvt:ZvtDecoder",
    "cn_ecr": "drivers.protocols.cn_ecr:CnEcrDecoder",
    "escpos": "drivers.protocols.escpos:EscposEventDecoder",
}


class UnknownProtocol(ValueError):
    pass


def build_decoder(protocol: str, *, tz: tzinfo, options: Mapping[str, Any] | None = None,
                  source: str | None = None) -> BoundaryDecoder:
    """The decoder for ``protocol`` ("auto" sniffs), configured with ``options`` (the source's
    ``[[source]].options``; unknown keys raise TypeError). Events carry ``source`` (default: the
    protocol name as given).

    Always behind the event boundary (drivers/boundary.py): every event it returns is card-scrubbed and
    within the model's limits, what is not waits in ``take_rejected()``, and no exception escapes it."""
    if protocol != "auto" and protocol not in PROTOCOLS:
        raise UnknownProtocol(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)}, auto)")
    kwargs = dict(options or {})
    label = source if source is not None else protocol
    def make() -> Decoder:
        if protocol == "auto":
            return SniffingDecoder(lambda found: _construct(found, tz, label, kwargs))
        return _construct(protocol, tz, label, kwargs)

    return BoundaryDecoder(make(), label, rebuild=make)


def _construct(protocol: str, tz: tzinfo, source: str, options: dict[str, Any]) -> Decoder:
    module_name, _, cls_name = PROTOCOLS[protocol].partition(":")
    cls = getattr(import_module(module_name), cls_name)
    decoder: Decoder = cls(tz=tz, source=source, **options)
    return decoder


__all__ = ["PROTOCOLS", "BoundaryDecoder", "Decoder", "DecoderStats", "SniffingDecoder", "UnknownProtocol",
           "build_decoder", "sniff"]
