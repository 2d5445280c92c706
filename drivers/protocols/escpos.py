"""The printer tap: an ESC/POS print stream in, receipts (and what they record) out.

(Over 500 lines on purpose: the command-length tables and the one parser that walks them must be read
together; framing and meaning are not separable here because a command's length is its meaning.)

Two layers, both sans-I/O:

* :class:`EscposDecoder` turns bytes into one :class:`ReceiptText` per printed
  receipt: commands are parsed with their exact parameter lengths and dropped,
  images and barcodes are skipped (counted), QR contents are kept.
* :class:`EscposEventDecoder` (protocol ``"escpos"``) runs the receipt
  templates of :mod:`drivers.receipts` over each receipt and emits the
  ReceiptText followed by the Transaction/Settlement it records.

Text decoding rule. Shop printers in this market run in Chinese mode by
default, and GB18030 never uses a byte below 0x20, so control bytes are
always recognisable. High bytes are decoded as GB18030 unless the stream
explicitly left Chinese mode (``FS .``, the latest of ``FS &``/``FS .``) *and*
selected a code page with ``ESC t`` at some point; then the ``ESC t`` page is
used. ``python-escpos`` sends ``ESC t 0`` before all text, which must not
turn a Chinese printer into CP437, hence the ``FS .`` requirement. A decoder
built with ``chinese_default=False`` models a Western printer instead: code
page (CP437 until ``ESC t``) unless ``FS &`` is on.

Receipt boundaries: a cut (``GS V``, ``ESC i``, ``ESC m``), ``ESC @`` once the
receipt has text, and :meth:`EscposDecoder.flush` (the caller's idle timeout).
Line feeds that print an empty line (``LF``, ``ESC d``, ``ESC J``, ...) give one
blank line each (``ESC d n`` counts once, whatever ``n``: it is paper spacing,
not content); blank lines at the start and end of a receipt are dropped.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, tzinfo
from pathlib import Path

from drivers.events import Event, ReceiptText
from drivers.pan import scrub_text
from drivers.protocols.base import DecoderStats
from drivers.receipts import load_templates, read_receipt

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
HT, LF, FF, CR, CAN = 0x09, 0x0A, 0x0C, 0x0D, 0x18

# Caps: a hostile or broken stream must never make the decoder hold more than this.
MAX_PENDING = 512            # an incomplete command header carried to the next feed()
MAX_LINE_CHARS = 4096        # a longer line is split
MAX_RECEIPT_LINES = 2000     # further lines of one receipt are dropped (counted)
MAX_QR_BYTES = 8192          # a QR symbol holds at most 7089 characters
MAX_QR_PER_RECEIPT = 32
MAX_NUL_PARAM = 256          # NUL-terminated parameters: ESC D (<= 32 stops), GS k data (<= 255)

NEED_MORE = -1

_CONTROL = re.compile(rb"[\x00-\x1f]")

# ESC t n -> Python codec, for the pages Epson numbers consistently.
CODE_PAGES: dict[int, str] = {
    0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 13: "cp857", 14: "cp737",
    15: "iso8859_7", 16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858", 32: "cp720",
    33: "cp775", 34: "cp855", 35: "cp861", 36: "cp862", 37: "cp864", 38: "cp869",
    39: "iso8859_2", 40: "iso8859_15", 44: "cp1125", 45: "cp1250", 46: "cp1251", 47: "cp1253",
    48: "cp1254", 49: "cp1255", 50: "cp1256", 51: "cp1257", 52: "cp1258", 53: "kz1048",
}
DEFAULT_CODE_PAGE = "cp437"

# Commands whose parameters are a fixed number of bytes: second byte -> count.
_ESC_FIXED: dict[int, int] = {
    0x20: 1,  # ESC SP n  right-side character spacing
    0x21: 1,  # ESC ! n   print mode
    0x24: 2,  # ESC $ nL nH  absolute position
    0x25: 1,  # ESC % n   user-defined character set on/off
    0x2D: 1,  # ESC - n   underline
    0x32: 0,  # ESC 2     default line spacing
    0x33: 1,  # ESC 3 n   line spacing
    0x3C: 0,  # ESC <     return home
    0x3D: 1,  # ESC = n   select peripheral
    0x3F: 1,  # ESC ? n   cancel user-defined character
    0x42: 2,  # ESC B n t  beeper (Chinese printers; python-escpos buzzer())
    0x45: 1,  # ESC E n   emphasis
    0x47: 1,  # ESC G n   double strike
    0x4C: 0,  # ESC L     page mode
    0x4D: 1,  # ESC M n   font
    0x52: 1,  # ESC R n   international character set
    0x53: 0,  # ESC S     standard mode
    0x54: 1,  # ESC T n   print direction (page mode)
    0x55: 1,  # ESC U n   unidirectional printing
    0x56: 1,  # ESC V n   90-degree rotation
    0x57: 8,  # ESC W     print area (page mode)
    0x5C: 2,  # ESC \ nL nH  relative position
    0x61: 1,  # ESC a n   justification
    0x63: 2,  # ESC c 3|4|5 n  paper sensors / panel buttons
    0x70: 3,  # ESC p m t1 t2  drawer pulse
    0x72: 1,  # ESC r n   colour
    0x75: 1,  # ESC u n   peripheral status
    0x76: 0,  # ESC v     paper status
    0x7B: 1,  # ESC { n   upside-down
}
# These print the line buffer (then feed), so they end the current text line.
_ESC_LINE_END = {0x64: 1, 0x4A: 1, 0x65: 1, 0x4B: 1, 0x0C: 0}   # ESC d, J, e, K, FF
_ESC_CUT = (0x69, 0x6D)                                             # ESC i, ESC m

_GS_FIXED: dict[int, int] = {
    0x21: 1,  # GS ! n    character size
    0x24: 2,  # GS $      absolute vertical position
    0x2F: 1,  # GS / m    print downloaded bit image
    0x3A: 0,  # GS :      macro definition start/end
    0x42: 1,  # GS B n    white/black reverse
    0x45: 1,  # GS E n    head energy
    0x48: 1,  # GS H n    HRI position
    0x49: 1,  # GS I n    transmit printer ID
    0x4C: 2,  # GS L      left margin
    0x50: 2,  # GS P x y  motion units
    0x54: 1,  # GS T n    print position to line start
    0x57: 2,  # GS W      print area width
    0x5C: 2,  # GS \      relative vertical position
    0x5E: 3,  # GS ^ r t m  execute macro
    0x61: 1,  # GS a n    automatic status back
    0x62: 1,  # GS b n    smoothing
    0x63: 0,  # GS c      print counter
    0x66: 1,  # GS f n    HRI font
    0x67: 4,  # GS g 0|2 m nL nH  maintenance counter
    0x68: 1,  # GS h n    barcode height
    0x6A: 1,  # GS j n    automatic ink/paper status
    0x72: 1,  # GS r n    transmit status
    0x77: 1,  # GS w n    barcode module width
    0x7A: 2,  # GS z 0 n  online recovery wait
}
_GS_CUT_ONE = frozenset({0, 1, 48, 49})                  # GS V m
_GS_CUT_TWO = frozenset({65, 66, 97, 98, 103, 104})      # GS V m n

_FS_FIXED: dict[int, int] = {
    0x21: 1,  # FS ! n    Chinese character print mode
    0x2D: 1,  # FS - n    Chinese underline
    0x3F: 2,  # FS ? c1 c2  cancel user-defined Chinese character
    0x43: 1,  # FS C n    Chinese code system
    0x53: 2,  # FS S n1 n2  Chinese character spacing
    0x57: 1,  # FS W n    Chinese quadruple size
    0x70: 2,  # FS p n m  print NV bit image
    0x32: 74,  # FS 2 c1 c2 + 72 bytes: define a 24x24 user-defined Chinese character
}
_FS_CHINESE_ON, _FS_CHINESE_OFF = 0x26, 0x2E

# GS ( L / GS 8 L functions that carry image data (the others print or manage it).
_GRAPHICS_STORE_FNS = frozenset({0x43, 0x44, 0x53, 0x54, 0x70, 0x71})
_QR_CN, _STORE_FN, _PRINT_FN = 49, 80, 81


class EscposDecoder:
    """Bytes from the printer channel -> one :class:`ReceiptText` per receipt."""

    protocol = "escpos"

    def __init__(self, *, tz: tzinfo | None = None, source: str | None = None,
                 reference: datetime | None = None, chinese_default: bool = True) -> None:
        if reference is not None and reference.tzinfo is None:
            raise ValueError("reference must be timezone-aware")
        self.tz = tz
        self.source = source or "escpos"
        self.reference = reference
        self.chinese_default = chinese_default
        self.stats = DecoderStats()
        self._buf = bytearray()            # incomplete command, <= MAX_PENDING bytes
        self._skip = 0                     # payload bytes still to drop (images, barcodes, ...)
        self._collect = 0                  # QR payload bytes still to keep
        self._qr_buf = bytearray()
        # Repeated sub-records (ESC & glyphs, FS q images): how many, header size, payload rule.
        self._items_left = 0
        self._item_kind = 0
        self._item_y = 0
        # Text state.
        self._gb = codecs.getincrementaldecoder("gb18030")("replace")
        self._code_page = DEFAULT_CODE_PAGE
        self._esc_t_seen = False
        self._chinese: bool | None = None  # None: printer default; True after FS &; False after FS .
        self._line: list[str] = []
        self._line_len = 0
        self._lines: list[str] = []
        self._qr: list[str] = []
        self._received: datetime | None = None

    # ------------------------------------------------------------------ public

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        self.stats.bytes_in += len(data)
        self._received = received
        out: list[Event] = []
        if self._buf:
            buf = bytes(self._buf) + data
            self._buf.clear()
        else:
            buf = bytes(data)
        i, n = 0, len(buf)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            if self._collect:
                take = min(self._collect, n - i)
                self._qr_buf += buf[i:i + take]
                self._collect -= take
                i += take
                if not self._collect:
                    self._finish_qr()
                continue
            if self._items_left:
                step = self._item(buf, i)
                if step == NEED_MORE:
                    break
                i = step
                continue
            match = _CONTROL.search(buf, i)
            j = match.start() if match else n
            if j > i:
                self._text(buf[i:j])
                i = j
                continue
            self._close_text()
            byte = buf[i]
            if byte in (ESC, GS, FS, DLE):
                step = self._command(buf, i, out)
                if step == NEED_MORE:
                    break
                i = step
                continue
            if byte in (LF, FF):
                self._end_line()
            elif byte == HT:
                self._append("\t")
            elif byte == CAN:
                self._line.clear()
                self._line_len = 0
            elif byte != CR:
                # CR only matters with auto line feed, which receipt printers leave off.
                self.stats.bytes_skipped += 1
                self.stats.bump("stray_control_bytes")
            i += 1
        if i < n:
            rest = buf[i:]
            assert len(rest) <= MAX_PENDING, "a command header outgrew MAX_PENDING"
            self._buf += rest
        return out

    def flush(self, received: datetime | None = None) -> list[Event]:
        """Idle timeout or end of input: the receipt in progress is complete.

        An incomplete command or image stays pending: an idle gap inside a
        command is legal on a slow link, and the next bytes continue it.
        """
        self._received = received
        out: list[Event] = []
        self._close_text()
        self._end_receipt(out)
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    @property
    def buffered_chars(self) -> int:
        """Characters held for the receipt in progress (bounded by the caps)."""
        return self._line_len + sum(len(x) for x in self._lines) + sum(len(x) for x in self._qr)

    # ------------------------------------------------------------------ text

    def _use_gb18030(self) -> bool:
        if self._chinese is not None:
            if self._chinese:
                return True
            return self.chinese_default and not self._esc_t_seen
        return self.chinese_default

    def _text(self, raw: bytes) -> None:
        text = self._gb.decode(raw) if self._use_gb18030() else raw.decode(self._code_page, "replace")
        if text:
            self._append(text)

    def _close_text(self) -> None:
        # A multi-byte character cut short by a control byte is a replacement character,
        # not the first half of whatever text comes after the command.
        if self._gb.getstate()[0]:
            tail = self._gb.decode(b"", True)
            self._gb.reset()
            if tail:
                self._append(tail)

    def _append(self, text: str) -> None:
        self._line.append(text)
        self._line_len += len(text)
        while self._line_len >= MAX_LINE_CHARS:
            joined = "".join(self._line)
            self._line = [joined[MAX_LINE_CHARS:]]
            self._line_len = len(self._line[0])
            self.stats.bump("lines_split")
            self._add_line(joined[:MAX_LINE_CHARS])

    def _end_line(self) -> None:
        joined = "".join(self._line)
        self._line.clear()
        self._line_len = 0
        self._add_line(joined)

    def _add_line(self, text: str) -> None:
        if len(self._lines) >= MAX_RECEIPT_LINES:
            self.stats.bump("lines_dropped")
            return
        self._lines.append(scrub_text(text.rstrip()))

    def _has_content(self) -> bool:
        return bool(self._line_len or self._qr or any(self._lines))

    def _end_receipt(self, out: list[Event]) -> None:
        if self._line_len:
            self._end_line()
        lines = self._lines
        start, end = 0, len(lines)
        while start < end and not lines[start]:
            start += 1
        while end > start and not lines[end - 1]:
            end -= 1
        qr = tuple(self._qr)
        self._lines = []
        self._qr = []
        if start == end and not qr:
            return
        when = self._received if self._received is not None else self.reference
        out.append(ReceiptText(source=self.source, time=when, lines=tuple(lines[start:end]), qr=qr))
        self.stats.frames += 1
        self.stats.events += 1

    def _initialise(self, out: list[Event]) -> None:
        if self._has_content():
            self._end_receipt(out)
        self._code_page = DEFAULT_CODE_PAGE
        self._chinese = None
        self._line.clear()
        self._line_len = 0

    # ------------------------------------------------------------------ commands

    def _command(self, buf: bytes, i: int, out: list[Event]) -> int:
        n = len(buf)
        if i + 1 >= n:
            return NEED_MORE
        prefix, code = buf[i], buf[i + 1]
        if prefix == ESC:
            return self._esc(buf, i, code, out)
        if prefix == GS:
            return self._gs(buf, i, code, out)
        if prefix == FS:
            return self._fs(buf, i, code)
        return self._dle(buf, i, code)

    def _unknown(self, buf: bytes, i: int) -> int:
        """Resynchronise: drop the prefix (and the command letter if it is one), keep what follows."""
        code = buf[i + 1]
        size = 2 if 0x20 <= code < 0x80 else 1
        self.stats.bytes_skipped += size
        self.stats.bump("unknown_commands")
        self.stats.last_error = f"unknown ESC/POS command {buf[i:i + size].hex(' ')} skipped"
        return i + size

    def _esc(self, buf: bytes, i: int, code: int, out: list[Event]) -> int:
        n = len(buf)
        fixed = _ESC_FIXED.get(code)
        if fixed is not None:
            return i + 2 + fixed if i + 2 + fixed <= n else NEED_MORE
        if code == 0x40:                       # ESC @ initialise
            self._initialise(out)
            return i + 2
        if code == 0x74:                       # ESC t n code page
            if i + 3 > n:
                return NEED_MORE
            self._esc_t_seen = True
            self._code_page = CODE_PAGES.get(buf[i + 2], DEFAULT_CODE_PAGE)
            if buf[i + 2] not in CODE_PAGES:
                self.stats.bump("unknown_code_pages")
            return i + 3
        size = _ESC_LINE_END.get(code)
        if size is not None:
            if i + 2 + size > n:
                return NEED_MORE
            self._end_line()
            return i + 2 + size
        if code in _ESC_CUT:
            self._end_receipt(out)
            return i + 2
        if code == 0x44:                       # ESC D n1..nk NUL  tab stops
            return self._nul_terminated(buf, i, i + 2)
        if code == 0x2A:                       # ESC * m nL nH d...  bit image
            if i + 5 > n:
                return NEED_MORE
            m, count = buf[i + 2], buf[i + 3] | buf[i + 4] << 8
            if m in (0, 1):
                return self._skip_payload(i + 5, count, "images_skipped")
            if m in (32, 33):
                return self._skip_payload(i + 5, 3 * count, "images_skipped")
            return self._unknown(buf, i)
        if code == 0x26:                       # ESC & y c1 c2 [x d1..d(y*x)]...  user glyphs
            if i + 5 > n:
                return NEED_MORE
            y, c1, c2 = buf[i + 2], buf[i + 3], buf[i + 4]
            if not (1 <= y <= 3 and 0x20 <= c1 <= c2 <= 0x7E):
                return self._unknown(buf, i)
            self._items_left, self._item_kind, self._item_y = c2 - c1 + 1, 0x26, y
            self.stats.bump("glyphs_skipped", c2 - c1 + 1)
            return i + 5
        if code == 0x28:                       # ESC ( fn pL pH ...
            return self._paren(buf, i)
        return self._unknown(buf, i)

    def _gs(self, buf: bytes, i: int, code: int, out: list[Event]) -> int:
        n = len(buf)
        fixed = _GS_FIXED.get(code)
        if fixed is not None:
            return i + 2 + fixed if i + 2 + fixed <= n else NEED_MORE
        if code == 0x56:                       # GS V  cut
            if i + 3 > n:
                return NEED_MORE
            m = buf[i + 2]
            if m in _GS_CUT_ONE:
                end = i + 3
            elif m in _GS_CUT_TWO:
                if i + 4 > n:
                    return NEED_MORE
                end = i + 4
            else:
                return self._unknown(buf, i)
            self._end_receipt(out)
            return end
        if code == 0x76:                       # GS v 0 m xL xH yL yH d...  raster image
            if i + 8 > n:
                return NEED_MORE
            if buf[i + 2] not in (0x30, 0x00):
                return self._unknown(buf, i)
            width = buf[i + 4] | buf[i + 5] << 8
            height = buf[i + 6] | buf[i + 7] << 8
            return self._skip_payload(i + 8, width * height, "images_skipped")
        if code == 0x28:                       # GS ( fn pL pH ...
            return self._paren(buf, i)
        if code == 0x38:                       # GS 8 L p1 p2 p3 p4 ...  large graphics
            if i + 7 > n:
                return NEED_MORE
            if buf[i + 2] != 0x4C:
                return self._unknown(buf, i)
            size = int.from_bytes(buf[i + 3:i + 7], "little")
            self.stats.bump("images_skipped")
            return self._skip_payload(i + 7, size, None)
        if code == 0x6B:                       # GS k m ...  barcode
            if i + 3 > n:
                return NEED_MORE
            m = buf[i + 2]
            if m <= 6:
                end = self._nul_terminated(buf, i, i + 3)
                if end != NEED_MORE and end > i + 2 and buf[end - 1] == 0:
                    self.stats.bump("barcodes_skipped")
                return end
            if 65 <= m <= 79:
                if i + 4 > n:
                    return NEED_MORE
                return self._skip_payload(i + 4, buf[i + 3], "barcodes_skipped")
            return self._unknown(buf, i)
        if code == 0x2A:                       # GS * x y d...  downloaded bit image
            if i + 4 > n:
                return NEED_MORE
            return self._skip_payload(i + 4, buf[i + 2] * buf[i + 3] * 8, "images_skipped")
        return self._unknown(buf, i)

    def _fs(self, buf: bytes, i: int, code: int) -> int:
        n = len(buf)
        if code == _FS_CHINESE_ON:
            self._chinese = True
            return i + 2
        if code == _FS_CHINESE_OFF:
            self._chinese = False
            return i + 2
        fixed = _FS_FIXED.get(code)
        if fixed is not None:
            return i + 2 + fixed if i + 2 + fixed <= n else NEED_MORE
        if code == 0x71:                       # FS q n [xL xH yL yH d...]...  define NV images
            if i + 3 > n:
                return NEED_MORE
            if buf[i + 2]:
                self._items_left, self._item_kind = buf[i + 2], 0x71
                self.stats.bump("images_skipped", buf[i + 2])
            return i + 3
        if code == 0x67:                       # FS g 1|2 m a1 a2 a3 a4 nL nH [d...]  NV user memory
            if i + 10 > n:
                return NEED_MORE
            fn = buf[i + 2]
            size = buf[i + 8] | buf[i + 9] << 8
            if fn == 1:
                return self._skip_payload(i + 10, size, None)
            if fn == 2:
                return i + 10
            return self._unknown(buf, i)
        if code == 0x28:                       # FS ( fn pL pH ...
            return self._paren(buf, i)
        return self._unknown(buf, i)

    def _dle(self, buf: bytes, i: int, code: int) -> int:
        n = len(buf)
        if code == 0x05:                       # DLE ENQ n
            return i + 3 if i + 3 <= n else NEED_MORE
        if code == 0x04:                       # DLE EOT n [a]
            if i + 3 > n:
                return NEED_MORE
            size = 4 if buf[i + 2] in (7, 8) else 3
            return i + size if i + size <= n else NEED_MORE
        if code == 0x14:                       # DLE DC4 fn ...
            if i + 3 > n:
                return NEED_MORE
            extra = {1: 2, 2: 2, 3: 5, 7: 1, 8: 7}.get(buf[i + 2])
            if extra is None:
                return self._unknown(buf, i)
            size = 3 + extra
            return i + size if i + size <= n else NEED_MORE
        return self._unknown(buf, i)

    # ------------------------------------------------------------------ variable-length helpers

    def _nul_terminated(self, buf: bytes, i: int, start: int) -> int:
        end = buf.find(b"\x00", start, start + MAX_NUL_PARAM)
        if end >= 0:
            return end + 1
        if len(buf) - start < MAX_NUL_PARAM:
            return NEED_MORE
        self.stats.bad_frames += 1
        return self._unknown(buf, i)

    def _skip_payload(self, start: int, size: int, counter: str | None) -> int:
        # The payload is never buffered: the main loop drops it by slicing, across feeds.
        if counter is not None:
            self.stats.bump(counter)
        self._skip = size
        return start

    def _paren(self, buf: bytes, i: int) -> int:
        """``ESC|GS|FS ( fn pL pH`` then pL + 256 * pH bytes of function data."""
        n = len(buf)
        if i + 5 > n:
            return NEED_MORE
        fn = buf[i + 2]
        if not 0x20 <= fn < 0x80:
            return self._unknown(buf, i)
        size = buf[i + 3] | buf[i + 4] << 8
        # The first data bytes (cn fn m) say what the payload is; wait until they are here.
        head_len = min(size, 3)
        if i + 5 + head_len > n:
            return NEED_MORE
        head = buf[i + 5:i + 5 + head_len]
        if buf[i] == GS and fn == 0x6B and head_len >= 2:          # GS ( k  2D symbols
            cn, sub = head[0], head[1]
            if cn == _QR_CN and sub == _STORE_FN and head_len == 3:
                return self._start_qr(i + 8, size - 3)
            if sub == _PRINT_FN and cn != _QR_CN:
                self.stats.bump("barcodes_skipped")
        elif buf[i] == GS and fn == 0x4C and head_len >= 2 and head[1] in _GRAPHICS_STORE_FNS:
            self.stats.bump("images_skipped")                       # GS ( L store graphics
        return self._skip_payload(i + 5, size, None)

    def _start_qr(self, start: int, size: int) -> int:
        self.stats.bump("qr_codes")
        if size > MAX_QR_BYTES:
            self.stats.bump("qr_too_long")
            self._skip = size
            return start
        self._qr_buf.clear()
        self._collect = size
        if not size:
            self._finish_qr()
        return start

    def _finish_qr(self) -> None:
        raw = bytes(self._qr_buf)
        self._qr_buf.clear()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("gb18030", "replace")
        if len(self._qr) < MAX_QR_PER_RECEIPT:
            self._qr.append(scrub_text(text))
        else:
            self.stats.bump("qr_dropped")

    def _item(self, buf: bytes, i: int) -> int:
        n = len(buf)
        if self._item_kind == 0x26:            # ESC & glyph: x then y * x bytes
            if i + 1 > n:
                return NEED_MORE
            self._skip = self._item_y * buf[i]
            self._items_left -= 1
            return i + 1
        if i + 4 > n:                          # FS q image: xL xH yL yH then x * y * 8 bytes
            return NEED_MORE
        width = buf[i] | buf[i + 1] << 8
        height = buf[i + 2] | buf[i + 3] << 8
        self._skip = width * height * 8
        self._items_left -= 1
        return i + 4


class EscposEventDecoder:
    """Protocol ``escpos``: receipts from the printer tap, then what the templates read on them.

    Emits each :class:`ReceiptText` followed by the Transaction/Settlement
    events its template yields (several when one receipt holds several
    slips); a receipt no template matches is emitted alone and counted in
    ``stats.counters["unmatched_receipts"]``. A receipt that looks like a payment slip or a till receipt
    but gives no event (or a slip on it that a template fits but cannot read) carries ``unread``
    ("no_template" | "missing_field", with the template and field): seen, not understood, never dropped.
    """

    protocol = "escpos"

    def __init__(self, *, tz: tzinfo, source: str | None = None, reference: datetime | None = None,
                 templates: Sequence[str] | None = None,
                 template_dirs: Sequence[str | Path] = (), chinese_default: bool = True) -> None:
        self.tz = tz
        self.source = source or "escpos"
        self._printer = EscposDecoder(tz=tz, source=self.source, reference=reference,
                                      chinese_default=chinese_default)
        self.stats = self._printer.stats
        self.templates = load_templates(templates, template_dirs)

    @property
    def printer(self) -> EscposDecoder:
        return self._printer

    def feed(self, data: bytes, received: datetime | None = None) -> list[Event]:
        return self._read(self._printer.feed(data, received))

    def flush(self, received: datetime | None = None) -> list[Event]:
        return self._read(self._printer.flush(received))

    def _read(self, receipts: list[Event]) -> list[Event]:
        out: list[Event] = []
        for receipt in receipts:
            if not isinstance(receipt, ReceiptText):
                out.append(receipt)
                continue
            try:
                found, receipt = read_receipt(receipt, self.templates, tz=self.tz, source=self.source)
            except Exception as exc:  # a slip no template can read safely is kept as text
                self.stats.bump("template_errors")
                self.stats.last_error = f"receipt template failed: {type(exc).__name__}: {exc}"
                found = []
            if receipt.unread is not None:
                # Seen but not understood (issue 18): the receipt says so, the agent counts and reports it.
                self.stats.bump(f"unread_{receipt.unread}")
            if not found:
                self.stats.bump("unmatched_receipts")
                out.append(receipt)
                continue
            # An order (a till's 小票) names no terminal.
            terminal_id = next((t for e in found if (t := getattr(e, "terminal_id", None))), None)
            out.append(replace(receipt, terminal_id=terminal_id) if terminal_id else receipt)
            out.extend(found)
            self.stats.events += len(found)
            self.stats.bump("matched_receipts")
        return out


def encode_text_receipt(lines: Sequence[str], *, encoding: str = "gb18030", cut: bool = True) -> bytes:
    """The bytes a till sends to print ``lines`` (for the simulator and tests).

    ESC @, FS & (Chinese mode), each line then LF, and GS V 66 0 (feed and
    cut) when ``cut``. Hand-written so that only the printer channel depends
    on python-escpos.
    """
    out = bytearray(b"\x1b@\x1c&")
    for line in lines:
        if any(ord(ch) < 0x20 for ch in line):
            raise ValueError(f"control character in receipt line {line!r}")
        out += line.encode(encoding)
        out += b"\n"
    if cut:
        out += b"\x1dVB\x00"
    return bytes(out)
