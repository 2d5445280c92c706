"""UnionPay-style ECR framing: bytes -> frame bodies, with the LRC and a strict, chunking-proof resync.

``[06] 02 LL LL <TLV body> 03 LRC``: the length is the body length as four BCD digits; the LRC is an
XOR whose start value and coverage differ by vendor (``lrc_init`` / ``lrc_covers``). A candidate is
accepted only when the body is a well-formed DFxx TLV list ending exactly at the ETX and the LRC
matches (unless ``verify_lrc=False``). Every check is a function of the bytes seen so far, so the
outcome never depends on how the stream was chunked; a candidate is rejected as soon as its prefix
proves it wrong, without waiting for the length it claims.
"""

from __future__ import annotations

from typing import Final, Literal

from drivers.protocols.base import DecoderStats

STX: Final = 0x02
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15
TAG_PREFIX: Final = 0xDF
# STX + 2 length bytes before the body, ETX + LRC after it.
FRAME_OVERHEAD: Final = 5
MAX_BODY: Final = 1024

LrcCoverage = Literal["len_to_etx", "body_to_etx", "stx_to_etx"]
LRC_COVERAGES: tuple[str, ...] = ("len_to_etx", "body_to_etx", "stx_to_etx")

# Byte -> its two BCD digits as a number, or -1 when a nibble is above 9.
_BCD_BYTE: tuple[int, ...] = tuple(
    (b >> 4) * 10 + (b & 0x0F) if (b >> 4) <= 9 and (b & 0x0F) <= 9 else -1 for b in range(256)
)


# _LOW_BYTES[k]: all ones over 2**k bytes, the half the LRC fold below keeps.
_LOW_BYTES: tuple[int, ...] = tuple((1 << (8 << k)) - 1 for k in range(12))


def lrc(data: bytes | bytearray | memoryview, init: int = 0x00) -> int:
    """XOR of every byte of ``data``, starting from ``init``."""
    # Fold the bytes as one big integer: a few wide XORs instead of a
    # per-byte Python loop (the LRC is on the hot path of every frame).
    # Rounding the width up to a power of two (zero bytes, which do not
    # change an XOR) keeps the masks in a table.
    value = int.from_bytes(data, "little")
    k = (len(data) - 1).bit_length()
    while k > 3:
        k -= 1
        mask = _LOW_BYTES[k] if k < len(_LOW_BYTES) else (1 << (8 << k)) - 1
        value = (value & mask) ^ (value >> (8 << k))
    value ^= value >> 32
    value ^= value >> 16
    value ^= value >> 8
    return (value ^ init) & 0xFF


def _lrc_span(frame_start: int, body_len: int, covers: str) -> tuple[int, int]:
    """Offsets (start, stop) the LRC covers, relative to the STX at ``frame_start``."""
    etx = frame_start + 3 + body_len
    if covers == "len_to_etx":
        return frame_start + 1, etx + 1
    if covers == "body_to_etx":
        return frame_start + 3, etx + 1
    return frame_start, etx + 1


# Outcome of looking at the candidate frame at the front of the buffer.
_NEED_MORE: Final = 0


_NOT_A_FRAME: Final = 1     # the STX byte was just data: drop it, hunt on


_BROKEN: Final = 2          # looked like a frame (length, DFxx body) but fell apart: drop STX, hunt on


_BAD_LRC: Final = 3         # complete and well-formed, checksum wrong: drop the whole frame


_FRAME: Final = 4


class CnEcrFramer:
    """Finds the frames in a byte buffer; counts what it skips (and ACK/NAK traffic) in ``stats``.

    State kept between calls is what makes a frame arriving byte by byte cheap and the verdict
    independent of chunking: how far the candidate's TLV headers were already walked, and the bytes
    still covered by the last candidate that fell apart (a spurious STX inside a broken frame is the
    same loss, not another).
    """

    def __init__(self, stats: DecoderStats, *, lrc_init: int = 0x00, lrc_covers: LrcCoverage = "len_to_etx",
                 verify_lrc: bool = True, max_body: int = MAX_BODY) -> None:
        self.stats = stats
        self.lrc_init = lrc_init
        self.verify_lrc = verify_lrc
        self.max_body = max_body
        # LRC start offset relative to the STX; it always runs to the ETX inclusive.
        self._lrc_from = {"len_to_etx": 1, "body_to_etx": 3, "stx_to_etx": 0}[lrc_covers]
        # Offset (from the candidate's STX) of its next TLV header still to check.
        self._walk = 3
        self._shadow = 0

    def next_frame(self, buf: bytes, pos: int, final: bool) -> tuple[int, tuple[int, int] | None]:
        """(consumed, (body start, body stop) or None): the next frame in ``buf[pos:]``, or None
        when the rest is undecided until more bytes come (with ``final``: dropped)."""
        stats = self.stats
        end = len(buf)
        # Where the shadow of the last broken candidate ends, as an offset in buf.
        shadow_end = pos + self._shadow
        while pos < end:
            if buf[pos] != STX:
                nxt = buf.find(STX, pos)
                stop = end if nxt < 0 else nxt
                # An ACK/NAK is a protocol byte only between frames; inside a
                # broken frame a 0x06 is just part of the loss.
                first = min(stop, max(pos, shadow_end))
                acks = buf.count(ACK, first, stop)
                naks = buf.count(NAK, first, stop)
                if acks:
                    stats.bump("ack", acks)
                if naks:
                    stats.bump("nak", naks)
                stats.bytes_skipped += stop - pos - acks - naks
                pos = stop
                self._walk = 3
                continue
            verdict, body_len, why = self._examine(buf, pos, end)
            if verdict == _FRAME:
                etx = pos + 3 + body_len
                self._walk = 3
                self._shadow = 0
                return etx + 2, (pos + 3, etx)
            if verdict == _NEED_MORE:
                if not final:
                    break
                # Only a candidate with a plausible length and a DFxx body
                # counts as a lost frame; a lone STX byte is just noise.
                looked_like_frame = body_len > 0 and end - pos >= 4
                verdict = _BROKEN if looked_like_frame else _NOT_A_FRAME
                why = f"{body_len}-byte frame cut short by the end of input"
            self._walk = 3
            if verdict == _BAD_LRC:
                stats.bad_frames += 1
                stats.bytes_skipped += body_len + FRAME_OVERHEAD
                stats.last_error = why
                pos += body_len + FRAME_OVERHEAD
                continue
            if verdict == _BROKEN and shadow_end <= pos:
                stats.bad_frames += 1
                stats.last_error = why
                shadow_end = pos + body_len + FRAME_OVERHEAD
            stats.bytes_skipped += 1
            pos += 1
        self._shadow = max(0, shadow_end - pos)
        return pos, None


    def _examine(self, buf: bytes, s: int, end: int) -> tuple[int, int, str]:
        """Judge the candidate at buf[s] == STX from the bytes up to ``end``."""
        avail = end - s
        if avail < 2:
            return _NEED_MORE, 0, ""
        hi = _BCD_BYTE[buf[s + 1]]
        if hi < 0:
            return _NOT_A_FRAME, 0, ""
        if avail < 3:
            return _NEED_MORE, 0, ""
        lo = _BCD_BYTE[buf[s + 2]]
        if lo < 0:
            return _NOT_A_FRAME, 0, ""
        body_len = hi * 100 + lo
        if body_len == 0:
            return _NOT_A_FRAME, 0, ""
        if avail < 4:
            return _NEED_MORE, body_len, ""
        if buf[s + 3] != TAG_PREFIX:
            return _NOT_A_FRAME, 0, ""
        if body_len > self.max_body:
            return _BROKEN, body_len, f"{body_len}-byte frame over the {self.max_body}-byte limit skipped"
        etx = s + 3 + body_len
        # Walk the top-level TLV headers; a header that is not DFxx, or a
        # value that runs past the ETX the length promises, proves the
        # length (or the frame) wrong before all of it has arrived.
        p = s + self._walk
        while p < etx:
            if p >= end:
                self._walk = p - s
                return _NEED_MORE, body_len, ""
            if buf[p] != TAG_PREFIX:
                return _BROKEN, body_len, f"TLV body broken at byte {p - s - 3} of a {body_len}-byte frame"
            if p + 3 > end:
                self._walk = p - s
                return _NEED_MORE, body_len, ""
            first = buf[p + 2]
            if first < 0x80:
                p += 3 + first
            elif first == 0x81:
                if p + 4 > end:
                    self._walk = p - s
                    return _NEED_MORE, body_len, ""
                p += 4 + buf[p + 3]
            elif first == 0x82:
                if p + 5 > end:
                    self._walk = p - s
                    return _NEED_MORE, body_len, ""
                p += 5 + ((buf[p + 3] << 8) | buf[p + 4])
            else:
                return _BROKEN, body_len, f"bad TLV length form {first:#04x} in a {body_len}-byte frame"
            if p > etx:
                return _BROKEN, body_len, f"TLV runs past the end of a {body_len}-byte frame"
        self._walk = p - s
        if end <= etx:
            return _NEED_MORE, body_len, ""
        if buf[etx] != ETX:
            return _BROKEN, body_len, f"no ETX after a {body_len}-byte body"
        if end <= etx + 1:
            return _NEED_MORE, body_len, ""
        if self.verify_lrc:
            computed = lrc(buf[s + self._lrc_from:etx + 1], self.lrc_init)
            stored = buf[etx + 1]
            if computed != stored:
                return _BAD_LRC, body_len, (f"LRC mismatch (stored {stored:02x}, computed {computed:02x}): "
                                            f"{body_len}-byte frame skipped")
        return _FRAME, body_len, ""
