"""A short slip for the cashier on the receipt printer: the one place that prints with python-escpos.

The slip is GB18030 text in the printer's Chinese character mode (``FS &``),
written with ``_raw``: python-escpos's text() runs a "magic encoder" over
single-byte code pages that has no GB18030 (or GBK) entry, so it would print
'?' for every Chinese character. Styling (bold, alignment), feed and cut
still go through the library.

One slip per alert that staff must act on; notices that need no action at
the till (resolution, update, all_clear) are acknowledged without printing,
so the delivery loop does not retry them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from escpos.escpos import Escpos
from escpos.exceptions import DeviceNotFoundError
from escpos.exceptions import Error as EscposError
from escpos.printer import File, Network, Serial, Usb

from agent.alerts.lifecycle import NoticeKind
from agent.delivery.channels.base import Channel, HttpSender, Notice, Outcome, RateLimit
from agent.delivery.channels.render import VERIFY_FOOTER, clean_text, facts, instruction

INIT = b"\x1b@"                 # ESC @: forget whatever mode the till's last receipt left behind
CHINESE_ON = b"\x1c&"           # FS &: two-byte (GB2312/GB18030) characters from here on
CHINESE_OFF = b"\x1c."          # FS .: back to single-byte, as the till's own receipts expect
PRINTED_KINDS = frozenset({NoticeKind.OPENED, NoticeKind.DIGEST, NoticeKind.REVIEW, NoticeKind.REMINDER,
                           NoticeKind.ESCALATED})
PRINTER_KINDS = ("serial", "network", "usb", "file")
# After a device error the printer is usually out of paper, off or unplugged: give a person time.
DEVICE_RETRY = 30.0

PrinterFactory = Callable[[], Escpos]


@dataclass(frozen=True, slots=True)
class PrinterSettings:
    kind: str                       # serial | network | usb | file
    device: str | None = None       # serial: /dev/ttyUSB0
    baudrate: int = 9600
    host: str | None = None         # network
    port: int = 9100
    vendor: int | None = None       # usb: idVendor / idProduct
    product: int | None = None
    path: str | None = None         # file: /dev/usb/lp0, a pty, or a plain file in tests
    timeout: float = 10.0

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> PrinterSettings:
        """The ``[channel.printer]`` table; errors name the field."""
        known = {"kind", "device", "baudrate", "host", "port", "vendor", "product", "path", "timeout"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"printer: unknown key(s) {', '.join(unknown)}")
        kind = table.get("kind")
        if kind not in PRINTER_KINDS:
            raise ValueError(f"printer.kind must be one of {', '.join(PRINTER_KINDS)} (got {kind!r})")
        needs = {"serial": ("device",), "network": ("host",), "usb": ("vendor", "product"), "file": ("path",)}
        for name in needs[kind]:
            if table.get(name) in (None, ""):
                raise ValueError(f"printer.{name} is required for kind = \"{kind}\"")

        def usb_id(name: str) -> int | None:
            value = table.get(name)
            if value is None or isinstance(value, int):
                return value
            try:
                return int(str(value), 16)   # lsusb prints "0416:5011": hex without 0x
            except ValueError:
                raise ValueError(f"printer.{name} must be a USB id like 0x0416 or \"0416\" "
                                 f"(got {value!r})") from None

        port = table.get("port", 9100)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"printer.port must be a TCP port, 1 to 65535 (got {port!r})")
        return cls(kind=kind, device=table.get("device"), baudrate=int(table.get("baudrate", 9600)),
                   host=table.get("host"), port=port, vendor=usb_id("vendor"),
                   product=usb_id("product"), path=table.get("path"),
                   timeout=float(table.get("timeout", 10.0)))

    def open(self) -> Escpos:
        """A printer object; nothing is opened until the first byte is written."""
        if self.kind == "serial":
            return Serial(devfile=self.device or "", baudrate=self.baudrate, timeout=self.timeout)
        if self.kind == "network":
            return Network(host=self.host or "", port=self.port, timeout=self.timeout)
        if self.kind == "usb":
            return Usb(idVendor=self.vendor, idProduct=self.product, timeout=int(self.timeout * 1000))
        return File(devfile=self.path or "")


def slip_lines(alert: Mapping[str, Any], *, kind: str, shop: str, now: datetime,
               deadline: datetime | None, tz: tzinfo | None, languages: Sequence[str] = ("zh",)) -> list[str]:
    """The slip's lines (headline first): what to do and by when, why, the details; PAN-scrubbed.

    The same sentences as the chat messages (render.instruction): a finding to verify says what to
    check and "如属正常交易，无需处理", never "void". English only for a printer configured with it.
    """
    f = facts(alert, notice_deadline=deadline, now=now, tz=tz)
    en = "en" in languages

    def say(zh: str, english: str) -> list[str]:
        return [zh, english] if en and english else [zh]

    if f.verify:
        head = say("!! 请核对", "PLEASE CHECK")
    elif kind == NoticeKind.ESCALATED or f.action == "refund":
        head = say("!! 需退货", "REFUND NEEDED")
    elif kind == NoticeKind.REMINDER:
        head = say("!! 提醒：仍待处理", "REMINDER")
    else:
        head = say("!! 请撤销", "PLEASE VOID")
    todo_zh, todo_en = instruction(f)
    lines = [" / ".join(head), *say(todo_zh, todo_en), *say(f"{f.title_zh}：{f.why_zh}", f"{f.title_en}: {f.why_en}")]
    details = [f"编号 {f.code}" if f.code else "", f"风险{f.severity_zh}" if f.severity_zh else ""]
    lines.append(" ".join(x for x in details if x))
    if f.card:
        lines.append(f"卡号 {f.card}")
    if f.verify:
        lines += say(*VERIFY_FOOTER)
    elif f.code:
        lines.append(f"处理后回复 settleguard ack {f.code}")
    stamp = now.astimezone(tz).strftime("%m-%d %H:%M") if tz else now.strftime("%m-%d %H:%M")
    lines.append(f"{shop} {stamp}")
    return [clean_text(line) for line in lines if line]


def print_slip(printer: Escpos, lines: list[str]) -> None:
    printer._raw(INIT + CHINESE_ON)
    printer.set(align="center", bold=True)
    printer._raw(lines[0].encode("gb18030", errors="replace") + b"\n")
    printer.set(align="left", bold=False)
    for line in lines[1:]:
        printer._raw(line.encode("gb18030", errors="replace") + b"\n")
    printer._raw(CHINESE_OFF)
    printer.cut()


class PrinterChannel(Channel):
    type = "printer"
    groups = True
    limits: tuple[RateLimit, ...] = ()

    def __init__(self, name: str, *, printer: PrinterSettings | Mapping[str, Any], tz: tzinfo | None = None,
                 factory: PrinterFactory | None = None, languages: Sequence[str] = ("zh",)) -> None:
        self.name = name
        self.languages = tuple(languages)
        self.settings = (printer if isinstance(printer, PrinterSettings)
                         else PrinterSettings.from_mapping(printer))
        self.tz = tz
        self.factory: PrinterFactory = factory or self.settings.open

    def slips(self, notice: Notice, now: datetime) -> list[list[str]]:
        if notice.kind not in PRINTED_KINDS:
            return []
        return [slip_lines(alert, kind=notice.kind, shop=notice.shop, now=now, deadline=notice.deadline,
                           tz=self.tz, languages=self.languages) for alert in notice.alerts]

    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome:
        slips = self.slips(notice, now)
        if not slips:
            return Outcome.ok(f"nothing to print for a {notice.kind} notice")
        printer: Escpos | None = None
        try:
            printer = self.factory()
            for lines in slips:
                print_slip(printer, lines)
        except (DeviceNotFoundError, OSError) as exc:
            return Outcome.retry(DEVICE_RETRY, f"printer {self.name}: {exc}".strip())
        except RuntimeError as exc:
            # python-escpos raises RuntimeError when the backend (pyusb, pyserial) is not installed.
            return Outcome.permanent(f"printer {self.name}: {exc}")
        except EscposError as exc:
            return Outcome.permanent(f"printer {self.name}: {exc}")
        finally:
            if printer is not None:
                # The slip is already out (auto-flush); a close error changes nothing for it.
                with contextlib.suppress(OSError, EscposError):
                    printer.close()
        return Outcome.ok(f"printed {len(slips)} slip(s)")
