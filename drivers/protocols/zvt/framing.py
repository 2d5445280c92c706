"""ZVT framing: bytes -> APDUs, for both transports, with the CRC and auto-detection between them.

Transports
    ``serial``  RS-232 frames ``DLE STX | APDU, each 0x10 doubled | DLE ETX |
                CRC-lo CRC-hi``; CRC-16/KERMIT over the unstuffed APDU plus
                ETX. The CRC bytes are not stuffed (see :func:`frame_serial`);
                a stuffed CRC from a lenient sender is accepted too. Single
                ACK (0x06) / NAK (0x15) bytes between frames are normal line
                traffic, not garbage.
    ``tcp``     bare APDUs back to back (ZVT over TCP/IP has no framing and
                no checksum), so resynchronisation can only rely on plausible
                ``CLASS INSTR`` pairs.
    ``auto``    (default) bare APDUs until a DLE STX shows up where an APDU
                could start; from then on the stream is serial for good.
                Checksummed framing is preferred as soon as it is seen
                (gpsd's habit), and a serial stream never has to be declared.
                Caveat: a serial tap that starts in the middle of a frame is
                read as bare APDUs until the next DLE STX, and that tail can
                look like a command; a source known to be a tty should pass
                ``transport="serial"`` (a socket ``"tcp"``).

APDU: ``CLASS INSTR LEN data``; ``LEN = FF`` means two more length bytes,
low byte first.
"""

from __future__ import annotations

import binascii
import re
from typing import Final, Literal, NamedTuple

from drivers.protocols.base import DecoderStats
from drivers.protocols.zvt.apdu import parse_bmps

Transport = Literal["serial", "tcp", "auto"]

DLE: Final = 0x10
STX: Final = 0x02
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15
DLE_STX: Final = b"\x10\x02"
DLE_ETX: Final = b"\x10\x03"

# The protocol's own ceiling (extended length is two bytes).
MAX_APDU_DATA: Final = 0xFFFF

_MODE_AUTO: Final = 0
_MODE_SERIAL: Final = 1
_MODE_TCP: Final = 2

# --------------------------------------------------------------------------
# CRC-16/KERMIT. binascii.crc_hqx is the MSB-first twin (XMODEM, same poly,
# init 0); feeding it bit-reversed bytes and reversing the result gives the
# LSB-first variant at C speed instead of a Python loop per byte.
_REV8: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_REV8_ETX: Final = bytes((_REV8[ETX],))


def crc_kermit(data: bytes) -> int:
    """CRC-16/KERMIT (poly 0x1021 reflected, init 0, no final XOR)."""
    crc = binascii.crc_hqx(data.translate(_REV8), 0)
    return (_REV8[crc & 0xFF] << 8) | _REV8[crc >> 8]


def _crc_kermit_etx(apdu: bytes) -> int:
    """crc_kermit(apdu + ETX) without building the concatenation."""
    crc = binascii.crc_hqx(_REV8_ETX, binascii.crc_hqx(apdu.translate(_REV8), 0))
    return (_REV8[crc & 0xFF] << 8) | _REV8[crc >> 8]


def _stuff(data: bytes) -> bytes:
    return data.replace(b"\x10", b"\x10\x10")


def frame_serial(apdu: bytes) -> bytes:
    """Wrap one APDU for RS-232: DLE STX, stuffed APDU, DLE ETX, CRC low byte, CRC high byte.

    Only the APDU is DLE-stuffed; the two CRC bytes go out as they are, even when one is 0x10. That is the
    ZVT transport protocol's block layout (PA00P016 "Transport-Protocol / Application-Protocol", RS232:
    ``DLE STX <APDU> DLE ETX <CRC-L> <CRC-H>``, DLE doubling inside the APDU), and what the implementations
    that talk to real terminals do: ecrterm writes ``... DLE ETX crc_l crc_h`` and, after DLE ETX, reads
    exactly two CRC bytes (ecrterm/transmission/transport_serial.py, SerialMessage and read());
    Wiffzack's zvtlib (github.com/Europa-Park/zvtlib, TransportLayer/RS232Tpdu.cs) appends the checksum
    unescaped and its receiver takes "any" two bytes after DLE ETX. A receiver needs no stuffing there: the
    CRC's place is fixed. A stuffed CRC byte (this function's output before issue 20) makes such receivers
    lose sync, so the simulator must not send one. The decoder still accepts both spellings
    (:func:`_match_crc`), since a stuffing sender costs nothing to read.
    """
    crc = crc_kermit(apdu + b"\x03")
    return DLE_STX + _stuff(apdu) + DLE_ETX + bytes((crc & 0xFF, crc >> 8))


# Plausible APDU starts on a bare (TCP) stream; anything else is skipped.
_FIXED_INSTR: Final[dict[int, frozenset[int]]] = {
    0x04: frozenset({0x0F, 0xFF}), 0x05: frozenset({0x01}), 0x80: frozenset({0x00}),
}
_OPEN_CLASSES: Final = frozenset({0x06, 0x08, 0x84})
_RAW_START: Final = re.compile(b"[\x04\x05\x06\x08\x80\x84]")
_AUTO_START: Final = re.compile(b"[\x04\x05\x06\x08\x80\x84\x10\x15]")



class Apdu(NamedTuple):
    """One APDU as framed: class, instruction, data (length header removed)."""

    cls: int
    ins: int
    data: bytes


class ZvtFramer:
    """Finds the APDUs in a byte buffer; counts what it skips in the decoder's ``stats``.

    :meth:`next_frame` answers "consumed, frame or None" (pymodbus framer style): the position up to
    which ``buf`` is used up, and the next APDU, or None when the rest must wait for more bytes (or,
    with ``final``, was dropped). The caller deletes consumed bytes and calls :meth:`consumed`.
    """

    def __init__(self, stats: DecoderStats, *, transport: Transport = "auto", max_apdu: int = MAX_APDU_DATA) -> None:
        self.stats = stats
        self.max_apdu = max_apdu
        # Worst case on the wire: every APDU byte stuffed, plus DLE STX, DLE ETX, stuffed CRC.
        self.max_frame = 2 * (max_apdu + 5) + 8
        self.mode = {"auto": _MODE_AUTO, "serial": _MODE_SERIAL, "tcp": _MODE_TCP}[transport]
        self.resume = 0  # where the DLE scan of the frame at buffer start continues

    @property
    def framing(self) -> str:
        """The framing in use: serial, tcp, or auto while no DLE STX has been seen."""
        return {_MODE_AUTO: "auto", _MODE_SERIAL: "serial", _MODE_TCP: "tcp"}[self.mode]

    def next_frame(self, buf: bytearray, pos: int, final: bool) -> tuple[int, Apdu | None]:
        while pos < len(buf):
            mode = self.mode
            if mode == _MODE_SERIAL:
                pos, frame = self._serial(buf, pos, final)
            else:
                pos, frame = self._raw(buf, pos, final)
            # Auto-detection switching to serial framing re-reads from where it stopped.
            if frame is not None or self.mode == mode:
                return pos, frame
        return pos, None

    def consumed(self, pos: int) -> None:
        """The caller dropped ``buf[:pos]``."""
        self.resume = max(0, self.resume - pos)

    def reset(self) -> None:
        self.resume = 0

    def _skip(self, n: int, why: str) -> None:
        if n > 0:
            self.stats.bytes_skipped += n
            self.stats.last_error = why

    def _skip_noise(self, buf: bytearray, start: int, end: int) -> None:
        """Bytes between serial frames: ACK/NAK are line traffic, the rest is garbage."""
        if end <= start:
            return
        chunk = buf[start:end]
        garbage = len(chunk) - chunk.count(ACK) - chunk.count(NAK)
        self._skip(garbage, "garbage between frames skipped")

    def _serial(self, buf: bytearray, pos: int, final: bool) -> tuple[int, Apdu | None]:
        n = len(buf)
        stats = self.stats
        while pos < n:
            start = buf.find(DLE_STX, pos)
            if start < 0:
                # A trailing DLE may be the first half of the next DLE STX.
                end = n - 1 if (buf[n - 1] == DLE and not final) else n
                self._skip_noise(buf, pos, end)
                self.resume = 0
                return end, None
            if start > pos:
                self._skip_noise(buf, pos, start)
                self.resume = 0
            pos = start
            scan = self.resume if self.resume > pos + 2 else pos + 2
            etx = -1
            rejected = False
            while True:
                j = buf.find(DLE, scan)
                if j < 0 or j + 1 >= n:
                    break
                follow = buf[j + 1]
                if follow == DLE:
                    scan = j + 2
                    continue
                if follow == ETX:
                    etx = j
                    break
                if follow == STX:
                    # A new frame starts inside this one: the first was cut off.
                    stats.bad_frames += 1
                    self._skip(j - pos, "frame cut off by a new DLE STX")
                    pos = j
                    scan = pos + 2
                    continue
                stats.bad_frames += 1
                rejected = True
                break
            if rejected:
                # Unstuffed DLE inside a frame: hunt again just past this DLE STX.
                self._skip(2, "unstuffed DLE inside a frame; resynchronising")
                self.resume = 0
                pos += 2
                continue
            if etx < 0:
                if n - pos > self.max_frame:
                    stats.bad_frames += 1
                    self._skip(2, f"frame longer than {self.max_frame} bytes; resynchronising")
                    self.resume = 0
                    pos += 2
                    continue
                if final:
                    stats.bad_frames += 1
                    stats.bump("truncated_frames")
                    self._skip(n - pos, "frame cut off at end of input")
                    self.resume = 0
                    return n, None
                self.resume = j if j >= 0 else n
                return pos, None
            apdu = bytes(buf[pos + 2:etx])
            if DLE in apdu:
                apdu = apdu.replace(b"\x10\x10", b"\x10")
            crc = _crc_kermit_etx(apdu)
            k = etx + 2
            lo, hi = crc & 0xFF, crc >> 8
            if lo != DLE and hi != DLE and k + 1 < n:
                # No stuffing possible: the two CRC bytes simply match or not.
                used: int | None = 2 if buf[k] == lo and buf[k + 1] == hi else -1
            else:
                used = _match_crc(buf, k, crc, final)
            if used is None:
                self.resume = etx
                return pos, None
            if used < 0:
                stats.bad_frames += 1
                stats.bump("crc_errors")
                # The frame is dropped whole; hunting resumes inside it in case
                # its DLE STX was garbage and a real frame starts later on.
                self._skip(2, "CRC mismatch; frame skipped")
                self.resume = 0
                pos += 2
                continue
            end = k + used
            self.resume = 0
            size = len(apdu)
            head = 3
            length = apdu[2] if size >= 3 else -1
            if length == 0xFF:
                head = 5
                length = apdu[3] | (apdu[4] << 8) if size >= 5 else -1
            if length < 0 or head + length != size:
                stats.bad_frames += 1
                stats.bump("apdu_length_mismatch")
                self._skip(end - pos, "APDU length does not match its serial frame")
                pos = end
                continue
            stats.frames += 1
            return end, Apdu(apdu[0], apdu[1], apdu[head:])
        return pos, None

    def _raw(self, buf: bytearray, pos: int, final: bool) -> tuple[int, Apdu | None]:
        n = len(buf)
        auto = self.mode == _MODE_AUTO
        finder = _AUTO_START if auto else _RAW_START
        stats = self.stats
        while pos < n:
            b0 = buf[pos]
            if auto:
                if b0 == DLE:
                    if pos + 1 >= n:
                        if not final:
                            return pos, None
                    elif buf[pos + 1] == STX:
                        self.mode = _MODE_SERIAL
                        return pos, None
                    self._skip(1, "garbage skipped")
                    pos += 1
                    continue
                if b0 == NAK:
                    pos += 1
                    continue
                if b0 == ACK:
                    # ACK before a serial frame, or the class byte of a bare 06 xx APDU?
                    if pos + 1 >= n and not final:
                        return pos, None
                    nxt = buf[pos + 1] if pos + 1 < n else -1
                    if nxt in (ACK, NAK, -1):
                        pos += 1
                        continue
                    if nxt == DLE:
                        if pos + 2 >= n and not final:
                            return pos, None
                        if pos + 2 < n and buf[pos + 2] == STX:
                            pos += 1
                            continue
            allowed = _FIXED_INSTR.get(b0)
            if allowed is None and b0 not in _OPEN_CLASSES:
                found = finder.search(buf, pos + 1)
                nxt_pos = found.start() if found else n
                self._skip(nxt_pos - pos, "garbage skipped")
                pos = nxt_pos
                continue
            if n - pos < 3:
                if not final:
                    return pos, None
                stats.bad_frames += 1
                stats.bump("truncated_apdus")
                self._skip(n - pos, "APDU header cut off at end of input")
                return n, None
            if allowed is not None and buf[pos + 1] not in allowed:
                self._skip(1, "implausible APDU header skipped")
                pos += 1
                continue
            length = buf[pos + 2]
            head = 3
            if length == 0xFF:
                if n - pos < 5:
                    if not final:
                        return pos, None
                    stats.bad_frames += 1
                    stats.bump("truncated_apdus")
                    self._skip(n - pos, "APDU header cut off at end of input")
                    return n, None
                length = buf[pos + 3] | (buf[pos + 4] << 8)
                head = 5
            if length > self.max_apdu:
                self._skip(1, f"APDU length {length} above the {self.max_apdu} cap; resynchronising")
                stats.bump("oversized_apdus")
                pos += 1
                continue
            end = pos + head + length
            if end > n:
                if not final:
                    return pos, None
                return n, self._truncated_raw(bytes(buf[pos:n]), head)
            stats.frames += 1
            return end, Apdu(b0, buf[pos + 1], bytes(buf[pos + head:end]))
        return pos, None

    def _truncated_raw(self, apdu: bytes, head: int) -> Apdu | None:
        """End of input inside a bare APDU.

        A status information whose present bytes still split into whole BMPs is
        used (a cut-off capture of a real payment is worth more than nothing;
        absent fields stay null). Anything else is dropped whole.
        """
        self.stats.bump("truncated_apdus")
        if apdu[0] == 0x04 and apdu[1] == 0x0F and parse_bmps(apdu, head).complete:
            self.stats.frames += 1
            self.stats.bump("truncated_status_used")
            return Apdu(0x04, 0x0F, apdu[head:])
        self.stats.bad_frames += 1
        self._skip(len(apdu), "APDU cut off at end of input")
        return None


def _match_crc(buf: bytearray, k: int, crc: int, final: bool) -> int | None:
    """How many wire bytes the CRC took at ``k``: -1 mismatch, None need more.

    Senders disagree on stuffing a CRC byte equal to DLE, so both spellings are
    accepted; when both fit, the one followed by a DLE STX wins.
    """
    plain = bytes((crc & 0xFF, crc >> 8))
    stuffed = _stuff(plain)
    avail = bytes(buf[k:k + len(stuffed) + 2])
    if stuffed == plain:
        if len(avail) < 2:
            return None if not final and plain.startswith(avail) else -1
        return 2 if avail.startswith(plain) else -1
    plain_ok = avail.startswith(plain)
    stuffed_ok = avail.startswith(stuffed)
    if plain_ok and stuffed_ok:
        after_plain = avail[len(plain):len(plain) + 2]
        if after_plain == DLE_STX:
            return len(plain)
        if len(after_plain) < 2 and not final:
            return None
        return len(stuffed)
    if stuffed_ok:
        return len(stuffed)
    if plain_ok:
        if not final and len(avail) < len(stuffed) and stuffed.startswith(avail):
            return None
        return len(plain)
    if not final and (stuffed.startswith(avail) or plain.startswith(avail)):
        return None
    return -1
