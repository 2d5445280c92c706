"""UnionPay-style ECR meaning: frame bodies -> :class:`Transaction` / :class:`Settlement` events.

The transaction-type numbers (POS_* constants) live in a vendor header that
was never published; only 45 (sale, 消费) and 46 (void, 撤销) are confirmed
by captured frames. :data:`~drivers.protocols.cn_ecr.fields.DEFAULT_TYPE_MAP`
documents the assumption made for the rest, and ``type_map=`` replaces it per terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from types import MappingProxyType
from typing import Final, TypeVar

from drivers.boundary import rejected
from drivers.events import KINDS, EcrRequest, Event, Rejected, Settlement, Transaction
from drivers.pan import SHORTEST_PAN, mask_pan
from drivers.protocols.base import DecoderStats
from drivers.protocols.cn_ecr.fields import (
    APPROVED_CODES,
    DEFAULT_TYPE_MAP,
    TYPE_TARGETS,
    SchemeTotals,
    TlvError,
    _amount_parts,
    _free_text,
    _inner_tlvs,
    _number_text,
    _read_totals,
    _response_code,
    _text,
    _TotalsRow,
    entry_mode,
)
from drivers.protocols.cn_ecr.framing import FRAME_OVERHEAD, LRC_COVERAGES, MAX_BODY, CnEcrFramer, LrcCoverage
from drivers.timeutil import infer_datetime


class CnEcrDecoder:
    """Bytes from the POS<->ECR serial line in, :class:`Transaction` / :class:`Settlement` out.

    Options: ``lrc_init`` (0x00 or 0x7F by vendor), ``lrc_covers``
    (``len_to_etx`` per the vendor source, ``body_to_etx``, ``stx_to_etx``),
    ``verify_lrc``, ``max_body`` (the terminal refuses more than 1024),
    ``type_map`` (DF02 code -> kind, ``settlement`` or ``ignore``; default
    :data:`DEFAULT_TYPE_MAP`), ``currency`` (when DF03 has no label) and
    ``reference`` (receive time used when ``feed`` gets none).

    Mapping choices:

    * ``amount_minor`` is DF03 without its sign; the kind carries the sign.
      A balance inquiry moves no money, so its amount is 0 (the card
      holder's balance is not the shop's business).
    * A response without an amount (error packets, status) yields no event.
    * A settlement is emitted only when approved: a failed 结算 leaves the
      batch open. ``count`` = debit count + credit count; ``total_minor`` =
      debit (sales) amount minus credit (returns) amount; from DF25-DF28
      when present, else summed over the per-scheme totals; ``balanced`` is
      None because the frame carries no such flag.
    """

    protocol = "cn_ecr"

    def __init__(self, *, tz: tzinfo, source: str | None = None,
                 lrc_init: int = 0x00, lrc_covers: LrcCoverage = "len_to_etx", verify_lrc: bool = True,
                 max_body: int = MAX_BODY, type_map: Mapping[str, str] | None = None,
                 currency: str = "CNY", reference: datetime | None = None, ecr_requests: bool = False) -> None:
        if not 0 <= lrc_init <= 0xFF:
            raise ValueError(f"lrc_init must be a byte value 0..255 (got {lrc_init})")
        if lrc_covers not in LRC_COVERAGES:
            raise ValueError(f"lrc_covers must be one of {', '.join(LRC_COVERAGES)} (got {lrc_covers!r})")
        # Four BCD digits cannot say more than 9999.
        if not 1 <= max_body <= 9999:
            raise ValueError(f"max_body must be 1..9999 (got {max_body})")
        if reference is not None and reference.tzinfo is None:
            raise ValueError("reference must be timezone-aware")
        mapping = dict(DEFAULT_TYPE_MAP if type_map is None else type_map)
        for code, target in mapping.items():
            if target not in TYPE_TARGETS:
                raise ValueError(
                    f"type_map[{code!r}] must be one of {', '.join(TYPE_TARGETS)} (got {target!r})")
        self.tz = tz
        self.source = source or self.protocol
        self.lrc_init = lrc_init
        self.lrc_covers = lrc_covers
        self.verify_lrc = verify_lrc
        self.max_body = max_body
        self.max_frame = max_body + FRAME_OVERHEAD
        self.type_map: Mapping[str, str] = MappingProxyType(mapping)
        self.currency = currency
        self.reference = reference
        # The till's request frames (DF01 00) as ``ecr_request`` events: on for a wire that carries the
        # till's side ([[source]] direction "both" / "till->terminal"); off, they are counted and skipped.
        self.ecr_requests = ecr_requests
        self.stats = DecoderStats()
        self.rejected: list[Rejected] = []  # frames whose contents broke the interpreter (quarantine)
        self._framer = CnEcrFramer(self.stats, lrc_init=lrc_init, lrc_covers=lrc_covers, verify_lrc=verify_lrc,
                                   max_body=max_body)
        # At most one candidate frame, held between feeds: noise before an STX
        # is dropped at once, and anything max_frame long is decided.
        self._buf = b""
        # Raw value -> decoded value for the fields a terminal repeats in
        # nearly every frame (terminal id, batch, operator, card name, the
        # shop's prices); see _remember for what may be kept.
        self._texts: dict[bytes | None, str | None] = {}
        self._ids: dict[bytes | None, str | None] = {}
        self._names: dict[bytes | None, str | None] = {}
        self._amounts: dict[bytes | None, tuple[int, bool, str | None] | None] = {}

    # -- public contract ---------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (never more than ``max_frame``)."""
        return len(self._buf)

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        if received is not None and received.tzinfo is None:
            raise ValueError("received must be timezone-aware")
        self.stats.bytes_in += len(data)
        out: list[Event] = []
        if not data:
            return out
        if not isinstance(data, bytes):
            data = bytes(data)
        pos = 0
        held = self._buf
        if held:
            # The held candidate plus max_frame new bytes is enough to decide
            # it, so the join stays small whatever the size of ``data``.
            work = held + data[:self.max_frame]
            stop = self._scan(work, 0, out, received, final=False)
            if len(data) <= self.max_frame:
                self._buf = work[stop:]
                return out
            # Whatever is left starts in ``data``: a candidate still starting
            # in ``held`` would have max_frame bytes after it, and be decided.
            pos = stop - len(held)
        # Frames are decoded where they lie in ``data``: no copy per frame.
        stop = self._scan(data, pos, out, received, final=False)
        self._buf = data[stop:]
        return out

    def _scan(self, buf: bytes, pos: int, out: list[Event], received: datetime | None, *, final: bool) -> int:
        """Decode every frame ``buf[pos:]`` settles, where it lies (no copy per frame); return where
        the undecided rest starts."""
        next_frame = self._framer.next_frame
        while True:
            pos, body = next_frame(buf, pos, final)
            if body is None:
                return pos
            try:
                self._frame(buf, body[0], body[1], out, received)
            except Exception as exc:  # one frame's failure is that frame's; the stream goes on
                self._frame_failed(exc, buf[body[0]:body[1]])

    def flush(self, received: datetime | None = None) -> list[Event]:
        """End of input: a partial frame will never complete, so hunt through it and drop the rest."""
        out: list[Event] = []
        self._scan(self._buf, 0, out, received, final=True)
        self._buf = b""
        return out

    # -- meaning -----------------------------------------------------------

    def _frame(self, buf: bytes, start: int, stop: int, out: list[Event], received: datetime | None) -> None:
        """The body buf[start:stop], whose top-level TLV list :meth:`_examine` has walked to its end."""
        top: dict[int, bytes] = {}
        p = start
        while p < stop:
            first = buf[p + 2]
            if first < 0x80:
                value = p + 3
            elif first == 0x81:
                value, first = p + 4, buf[p + 3]
            else:
                value, first = p + 5, (buf[p + 3] << 8) | buf[p + 4]
            top[0xDF00 | buf[p + 1]] = buf[value:value + first]
            p = value + first
        packet_type = _number_text(top.get(0xDF01), 2)
        try:
            inner = _inner_tlvs(top, packet_type)
        except TlvError as exc:
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += stop - start + FRAME_OVERHEAD
            self.stats.last_error = f"DF06 container broken: {exc}"
            return
        self.stats.frames += 1
        event = self._event(packet_type, top, inner, received)
        if event is None:
            self.stats.ignored_frames += 1
        else:
            out.append(event)
            self.stats.events += 1

    def _frame_failed(self, exc: Exception, body: bytes) -> None:
        """A well-framed body whose contents broke the interpreter: skipped, counted, quarantined."""
        self.stats.bad_frames += 1
        self.stats.bytes_skipped += len(body) + FRAME_OVERHEAD
        reason = f"frame contents not understood: {type(exc).__name__}: {exc}"
        self.stats.last_error = reason
        self.rejected.append(rejected(self.source, "decode", reason, body))

    def _ignore(self, counter: str, why: str | None = None) -> None:
        self.stats.bump(counter)
        if why is not None:
            self.stats.last_error = why

    def _event(self, packet_type: str | None, top: Mapping[int, bytes], inner: Mapping[int, bytes],
               received: datetime | None) -> Event | None:
        """The event for one frame, decoding only the fields it carries (same values as :func:`parse_body`)."""
        if packet_type == "00":
            return self._request(top, received)
        if packet_type == "01":
            self._ignore("host_messages")
            return None
        tran_code = _number_text(inner.get(0xDF02) or top.get(0xDF02), 2)
        target = self.type_map.get(tran_code) if tran_code is not None else None
        if target is None:
            self._ignore("unmapped_type",
                         f"transaction type {tran_code!r} is not in type_map; frame ignored")
            return None
        if target == "ignore":
            self._ignore("ignored_type")
            return None
        response_code = _response_code(top.get(0xDF07) or inner.get(0xDF07))
        approved = response_code in APPROVED_CODES
        if target == "settlement" and not approved:
            self._ignore("settlement_declined",
                         f"settlement refused by the terminal (response {response_code!r})")
            return None
        get = inner.get
        amounts = self._amounts
        raw = get(0xDF03)
        amount = amounts[raw] if raw in amounts else _remember(amounts, raw, _amount_parts(raw))
        if amount is None and target != "balance" and target != "settlement":
            self._ignore("no_amount")
            return None
        when = self._time(get(0xDF1C), get(0xDF1D), received)
        currency = (amount[2] if amount is not None else None) or self.currency
        if target == "settlement":
            count, total = _settlement_totals(*_read_totals(inner))
            return Settlement(
                source=self.source, time=when, terminal_id=_text(get(0xDF12)),
                merchant_id=_text(get(0xDF13)), batch_no=_number_text(get(0xDF11), 6),
                count=count, total_minor=total, currency=currency, balanced=None,
            )
        texts, ids, names = self._texts, self._ids, self._names
        raw = get(0xDF12)
        terminal_id = texts[raw] if raw in texts else _remember(texts, raw, _text(raw))
        raw = get(0xDF11)
        batch_no = ids[raw] if raw in ids else _remember(ids, raw, _number_text(raw, 6))
        raw = get(0xDF47)
        operator = names[raw] if raw in names else _remember(names, raw, _free_text(raw))
        raw = get(0xDF2C)
        card_type = names[raw] if raw in names else _remember(names, raw, _free_text(raw))
        if card_type is None:
            code = get(0xDF21)
            card_type = code.hex() if code else None
        entry = get(0xDF2F)
        return Transaction(
            source=self.source, kind=target, result="approved" if approved else "declined",
            # A balance inquiry moves no money: the card holder's balance is not the shop's business.
            amount_minor=0 if target == "balance" or amount is None else amount[0],
            time=when,
            terminal_id=terminal_id,
            merchant_id=_text(get(0xDF13)),
            batch_no=batch_no,
            voucher_no=_number_text(get(0xDF10), 6),
            trace_no=_number_text(get(0xDF0A), 6),
            rrn=_text(get(0xDF1A)),
            auth_code=_text(get(0xDF1B)),
            original_voucher_no=_number_text(get(0xDF18), 6),
            currency=currency,
            card=mask_pan(_text(get(0xDF1E))),
            card_type=card_type,
            entry_mode=entry_mode(_number_text(entry, 4)) if entry is not None else None,
            operator=operator,
        )

    def _request(self, top: Mapping[int, bytes], received: datetime | None) -> Event | None:
        """A request the till sent (DF01 00): DF02 the transaction type, DF03 the amount as 12 BCD digits,
        DF04 the random number the terminal's answer echoes (the request's id). A request for something that
        is not a transaction (sign-in, settlement, reprint) is counted and skipped."""
        self._ignore("requests")
        if not self.ecr_requests:
            return None
        tran_code = _number_text(top.get(0xDF02), 2)
        target = self.type_map.get(tran_code) if tran_code is not None else None
        if target not in KINDS or target == "balance":
            return None
        amount = _amount_parts(top.get(0xDF03))
        random = top.get(0xDF04)
        return EcrRequest(source=self.source, time=received if received is not None else self.reference,
                          state="requested", kind=target, amount_minor=amount[0] if amount is not None else None,
                          currency=(amount[2] if amount is not None else None) or self.currency,
                          request_id=random.hex() if random else None)

    def _time(self, date_field: bytes | None, clock_field: bytes | None,
              received: datetime | None) -> datetime | None:
        anchor = received if received is not None else self.reference
        if anchor is None:
            return None
        date, clock = _number_text(date_field, 4), _number_text(clock_field, 6)
        if date is None or clock is None or len(date) != 4 or len(clock) != 6:
            return None
        # Both are ASCII digit strings here, so arithmetic splits them like slicing would.
        month, day = divmod(int(date), 100)
        hour, rest = divmod(int(clock), 10_000)
        minute, second = divmod(rest, 100)
        if hour > 23 or minute > 59 or second > 59:
            return None
        return infer_datetime(month, day, hour, minute, second, tz=self.tz, received=anchor)


_MEMO_ENTRIES: Final = 256


_Decoded = TypeVar("_Decoded")


def _remember(memo: dict[bytes | None, _Decoded], raw: bytes | None, decoded: _Decoded) -> _Decoded:
    """Keep ``raw -> decoded`` in a bounded memo and return ``decoded``.

    Only values shorter than the shortest card number are kept, so a memo
    never holds a PAN that reached a field it should not be in.
    """
    if raw is None or len(raw) < SHORTEST_PAN:
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[raw] = decoded
    return decoded


def _settlement_totals(overall: _TotalsRow, schemes: tuple[SchemeTotals, ...]) -> tuple[int | None, int | None]:
    """``count`` = debit + credit counts, ``total`` = debit - credit amounts: DF25-DF28, else the schemes summed."""
    if any(v is not None for v in overall):
        rows: Iterable[_TotalsRow] = [overall]
    elif schemes:
        rows = [(s.debit_amount_minor, s.debit_count, s.credit_amount_minor, s.credit_count) for s in schemes]
    else:
        return None, None
    count = total = 0
    for d_amt, d_cnt, c_amt, c_cnt in rows:
        count += (d_cnt or 0) + (c_cnt or 0)
        total += (d_amt or 0) - (c_amt or 0)
    return count, total
