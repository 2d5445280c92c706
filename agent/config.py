"""The TOML configuration: parsed, validated completely, refused with file, line and field.

(Over 500 lines: every table's validation in one place, so each error names file, line and field.)

Secrets may be inline, ``env:NAME`` or ``file:PATH`` (systemd LoadCredential=). A channel's
``env:``/``file:`` secrets are resolved when the channel is built to send (``run`` builds every
channel at start-up, so a missing credential is still a configuration error there, not a failed
delivery at 22:59); ``replay`` and ``check-config`` never need them (:func:`unresolved_secrets`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from datetime import time as dtime
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# ConfigError, EX_CONFIG and system_zone live in a pydantic-free module so the CLI can use them cheaply.
from agent.config_errors import EX_CONFIG, ConfigError, system_zone  # noqa: F401 (re-exported)
from agent.identity import check_slug, derive_id, event_source, host_name
from agent.rules.calendar import HoursConfig
from agent.rules.engine import RuleConfigError, validate_rule_params
from agent.rules.params import Duration
from drivers.transports.tcp import (
    WILDCARDS,
    is_interface_name,
    is_ip_literal,
    parse_allow,
    parse_host_port,
    parse_listen,
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_reference(value: SecretStr) -> SecretStr:
    """An ``env:NAME`` / ``file:PATH`` reference that could never resolve is refused where it is written (with
    the line), not only when the daemon starts: the variable's value is read later, its name is checked now."""
    raw = value.get_secret_value()
    if raw.startswith("env:") and not _ENV_NAME.fullmatch(raw[4:]):
        raise ValueError(f"{raw[4:]!r} is not an environment variable name (letters, digits and _, "
                         "not starting with a digit), as in env:SETTLEGUARD_WECOM_KEY")
    if raw.startswith("file:") and not raw[5:].strip():
        raise ValueError("file: needs the secret file's path, as in file:/run/credentials/settleguard.service/key")
    return value


# A secret never formats as its value (str, repr, f-strings, model_dump(mode="json") all print
# "**********"); the raw value only through .get_secret_value() where it is used.
Secret = Annotated[SecretStr, AfterValidator(_check_reference)]


def reveal(value: SecretStr | str | None) -> str | None:
    """The raw value of a secret, for the one place that sends it."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SECRET_REF_PREFIXES = ("env:", "file:")
# Where systemd's LoadCredential= puts credentials inside the service, and where the shipped unit reads them.
CREDENTIALS_RUNTIME = "file:/run/credentials/settleguard.service/"
CREDENTIALS_SOURCE = "file:/etc/settleguard/credentials/"


def is_secret_ref(value: SecretStr | str | None) -> bool:
    raw = reveal(value)
    return isinstance(raw, str) and raw.startswith(SECRET_REF_PREFIXES)


def secret_fix(reference: str) -> str:
    """The exact step that makes ``reference`` (``env:NAME`` / ``file:PATH``) resolve."""
    if reference.startswith("env:"):
        name = reference[4:]
        return (f"export {name}=<the value> before running settleguard (under systemd: a drop-in with "
                f"Environment={name}=..., or LoadCredential= and file:/run/credentials/settleguard.service/...)")
    path = reference[5:]
    return f"put the secret in {path} (one line, readable by the service user), or write it inline"


def _resolve_secret(value: str) -> str:
    if value.startswith("env:"):
        name = value[4:]
        got = os.environ.get(name)
        if not got:
            raise ValueError(f"environment variable {name} is not set")
        return got
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def _hhmm(value: str) -> dtime:
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a time like \"23:00\"")
    return dtime(int(m.group(1)), int(m.group(2)))


class ShopConfig(_Strict):
    name: str = "settleguard shop"         # display name, shown in every message
    till: str = Field(default_factory=host_name)   # this till's display name
    # The CloudEvents source is settleguard://<id>/<till_id>: slugs, so a receiver can tell a chain's
    # shops and tills apart whatever their names; also in every machine notice's data and every metric.
    # Absent: the shop's from its name, the till's from the host name (derive_id), both stable.
    id: str | None = None
    till_id: str | None = None
    timezone: str | None = None  # zoneinfo name; None -> the system zone
    currency: str = "CNY"
    hours: dict[str, Any] | None = None  # validated by agent.rules.calendar when present

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use a zoneinfo name like \"Asia/Shanghai\")") from None
        return v

    @field_validator("currency")
    @classmethod
    def _cur(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ValueError("must be an ISO 4217 code like \"CNY\"")
        return v

    @field_validator("id")
    @classmethod
    def _shop_id(cls, v: str | None) -> str | None:
        return check_slug(v, "haowei-jingan", "shop")

    @field_validator("till_id")
    @classmethod
    def _till_id(cls, v: str | None) -> str | None:
        return check_slug(v, "till-1", "till")

    def tzinfo(self) -> tzinfo:
        return ZoneInfo(self.timezone) if self.timezone else system_zone()

    @property
    def shop_id(self) -> str:
        return self.id or derive_id(self.name, "shop")

    @property
    def till_slug(self) -> str:
        # The host name, not the display name: "收银台 1" is every shop's first till, the host is per till.
        return self.till_id or derive_id(host_name(), "till")

    @property
    def ids_derived(self) -> bool:
        return self.id is None or self.till_id is None

    @property
    def event_source(self) -> str:
        """The CloudEvents ``source`` of every webhook (agent/identity.py)."""
        return event_source(self.shop_id, self.till_slug)


class SettlementConfig(_Strict):
    cutoff: str = "23:00"   # local wall-clock time the acquirer settles, or "manual"
    review_lead: Duration = timedelta(minutes=30)
    review_times: list[str] = []   # extra review times, "HH:MM"
    all_clear: bool = True          # send "nothing open" at review time
    follow_up_days: int = Field(default=2, ge=1, le=30)

    @field_validator("cutoff")
    @classmethod
    def _cutoff(cls, v: str) -> str:
        if v != "manual":
            _hhmm(v)
        return v

    @field_validator("review_lead")
    @classmethod
    def _lead(cls, v: timedelta) -> timedelta:
        # The review is a time of day before the cutoff: a lead of a day or more names no time.
        return _within(v, timedelta(minutes=1), timedelta(hours=23, minutes=59))

    @field_validator("review_times")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        for item in v:
            _hhmm(item)
        return v

    @property
    def cutoff_time(self) -> dtime | None:
        return None if self.cutoff == "manual" else _hhmm(self.cutoff)


class SourceConfig(_Strict):
    name: str
    protocol: Literal["zvt", "cn_ecr", "jsonl", "escpos", "auto"]
    port: str | None = None            # any pyserial URL: /dev/ttyUSB0, /dev/serial/by-id/..., socket://h:p
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    listen: str | None = None          # TCP pass-through "127.0.0.1:9100" / "eth0:9100" / "9100" ...
    forward: str | None = None         # ... to the real printer "192.168.1.50:9100"
    allow: list[str] = []              # pass-through clients allowed ("192.168.1.23", "192.168.1.0/24"); [] = any
    spool: str | None = None           # a directory a virtual printer drops job files into
    file: str | None = None            # a capture file, read once (tests, demos)
    mode: Literal["passive", "listener"] = "passive"
    templates: list[str] = []          # receipt templates for escpos sources (default: every bundled one)
    idle_flush: Duration = timedelta(seconds=3)   # printer streams: a receipt ends after this idle time
    # No bytes / no transactions for this long during opening hours is a dead wire or a blind tap
    # (one staff notice, a doctor failure). None: derived from the journal's history (agent/watch/wires.py).
    silence: Duration | None = None
    # A terminal whose clock is off by more than this is reported once; rules use the corrected time.
    # "0s" turns the check off.
    clock_skew: Duration = timedelta(minutes=10)
    options: dict[str, Any] = {}       # decoder options (cn_ecr lrc_init, ...)
    # An integrated (ECR) link (issue 17): which way(s) this wire carries. "terminal->till": the terminal's
    # answers only (as before). "both": the till's requests and aborts too (one tap that sees both, or the
    # TCP proxy). "till->terminal": only the till's side, with ``pair`` naming the [[source]] that carries
    # the terminal's answers (a passive tap with one serial port per direction).
    direction: Literal["terminal->till", "both", "till->terminal"] = "terminal->till"
    pair: str | None = None

    @field_validator("silence")
    @classmethod
    def _silence(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and not timedelta(minutes=1) <= v <= timedelta(days=7):
            raise ValueError("must be between 1m and 7d (leave it out to derive it from the shop's history)")
        return v

    @field_validator("clock_skew")
    @classmethod
    def _clock_skew(cls, v: timedelta) -> timedelta:
        if not timedelta(0) <= v <= timedelta(days=30):
            raise ValueError("must be between 0s (off) and 30d")
        return v

    @field_validator("idle_flush")
    @classmethod
    def _idle(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(milliseconds=10), timedelta(minutes=10))

    @model_validator(mode="after")
    def _one_input(self) -> SourceConfig:
        given = [k for k in ("port", "listen", "spool", "file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of port, listen (with forward), spool or file")
        if self.listen and not self.forward:
            raise ValueError("listen needs forward = \"printer-host:9100\" (printing must go on)")
        if self.forward:
            try:
                parse_host_port(self.forward)
            except ValueError:
                raise ValueError(f"forward must look like \"host:port\" (got {self.forward!r})") from None
        if self.allow and not self.listen:
            raise ValueError("allow only applies to a TCP pass-through (listen = ...)")
        if self.listen:
            self._check_listen(self.listen)
        if self.protocol == "escpos":
            self._check_templates()
        if self.direction != "terminal->till" and self.protocol not in ("zvt", "cn_ecr", "jsonl"):
            raise ValueError(f"direction = \"{self.direction}\" is for an ECR link (protocol zvt, cn_ecr or jsonl)")
        if (self.direction == "till->terminal") != (self.pair is not None):
            raise ValueError("direction = \"till->terminal\" and pair = \"<the source with the terminal's "
                             "answers>\" go together")
        return self

    @property
    def ecr_link(self) -> str:
        """The ECR link this wire belongs to: the name of the source carrying the terminal's answers."""
        return self.pair if self.pair is not None else self.name

    @property
    def carries_requests(self) -> bool:
        """Whether the till's requests are on this wire (a terminal's TCP proxy copies both directions)."""
        return self.direction != "terminal->till" or bool(self.listen and self.protocol in ("zvt", "cn_ecr"))

    def _check_templates(self) -> None:
        """Load the receipt templates now (names and template_dirs): a missing one fails the decoder at start."""
        from drivers.receipts import load_templates

        dirs = self.options.get("template_dirs", ())
        try:
            load_templates(self.templates or None, [dirs] if isinstance(dirs, str) else dirs)
        except (ValueError, OSError, TypeError) as exc:
            raise ValueError(f"receipt templates: {exc}") from None

    def _check_listen(self, value: str) -> None:
        """Who can reach the printer port can print slips settleguard believes: keep it small."""
        try:
            host, _ = parse_listen(value)
        except ValueError:
            raise ValueError(f"listen must look like \"127.0.0.1:9100\", \"eth0:9100\" or \"9100\" "
                             f"(got {value!r})") from None
        if not (host == "localhost" or is_ip_literal(host) or is_interface_name(host)):
            raise ValueError(f"listen host {host!r} is neither an IP address of this machine nor a network "
                             "interface name like \"eth0\"")
        if host in WILDCARDS and not self.allow:
            raise ValueError(f"listen on all interfaces ({host}) lets anyone on the LAN print slips settleguard "
                             "believes: listen on 127.0.0.1 or one interface (\"eth0:9100\"), or list the "
                             "till's address in allow = [\"192.168.1.23\"]")

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        for i, entry in enumerate(v):
            try:
                parse_allow([entry])
            except ValueError as exc:
                raise ValueError(f"allow[{i}]: {exc}") from None
        return v


# Channel types no person reads: they may carry heartbeats.
MACHINE_CHANNEL_TYPES = frozenset({"webhook", "nats"})


class ChannelConfig(_Strict):
    name: str
    type: Literal["webhook", "wecom", "dingtalk", "feishu", "printer"]
    # All four are secrets: a URL may carry a token in its query, path or userinfo.
    url: Secret | None = None          # webhook target, or override of a robot's endpoint
    key: Secret | None = None          # WeCom robot key / DingTalk access_token / Feishu hook token
    secret: Secret | None = None       # signing secret (whsec_... for webhooks, robot sign secret)
    secrets: list[Secret] = []         # extra webhook secrets during rotation
    printer: dict[str, Any] = {}       # printer channel: kind = serial|network|usb|file and its settings
    enabled: bool = True
    fallback: bool = False             # only used when an earlier channel cannot deliver before the deadline
    # What people read on this channel: ["zh"] (the default: English only when asked) or ["zh", "en"].
    # Chat robots and the printer only; a webhook's body is the full alert JSON whatever this says.
    languages: list[Literal["zh", "en"]] = ["zh"]
    # Machine channels (webhook, nats): the till's health as a settleguard.heartbeat CloudEvent at start-up
    # and then this often ("5m"; agent/service/heartbeat.py), so head office tells a quiet till from a dead one.
    heartbeat: Duration | None = None

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _within(v, timedelta(seconds=10), timedelta(days=1))

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError('languages is ["zh"] or ["zh", "en"] (each once, at least one)')
        return v

    def references(self) -> list[tuple[str, str]]:
        """(field, ``env:``/``file:`` reference) of each secret read only when the channel is built to send."""
        out = [(name, reveal(getattr(self, name))) for name in ("key", "secret") if is_secret_ref(getattr(self, name))]
        out += [(f"secrets[{i}]", reveal(x)) for i, x in enumerate(self.secrets) if is_secret_ref(x)]
        return [(f, r) for f, r in out if r is not None]

    def resolved(self) -> ChannelConfig:
        """This channel with its secrets read (env/file), for sending; ValueError names the field and the fix."""
        values: dict[str, Any] = {}
        for name in ("key", "secret"):
            if is_secret_ref(getattr(self, name)):
                values[name] = SecretStr(_resolve_field(name, reveal(getattr(self, name)) or ""))
        if any(is_secret_ref(x) for x in self.secrets):
            values["secrets"] = [SecretStr(_resolve_field(f"secrets[{i}]", reveal(x) or "")) if is_secret_ref(x)
                                 else x for i, x in enumerate(self.secrets)]
        if not values:
            return self
        out = self.model_copy(update=values)
        if out.type == "webhook":
            for secret in (out.secret, *out.secrets):
                if secret:
                    _check_webhook_secret(secret.get_secret_value())
        return out

    def inert(self) -> ChannelConfig:
        """This channel with stand-ins for unread secrets: for replay, which lays messages out and sends nothing."""
        stand_in = _INERT_WEBHOOK_SECRET if self.type == "webhook" else "replay-sends-nothing"
        values: dict[str, Any] = {name: SecretStr(stand_in) for name in ("key", "secret")
                                  if is_secret_ref(getattr(self, name))}
        if any(is_secret_ref(x) for x in self.secrets):
            values["secrets"] = [SecretStr(stand_in) if is_secret_ref(x) else x for x in self.secrets]
        return self.model_copy(update=values) if values else self

    @model_validator(mode="after")
    def _needs(self) -> ChannelConfig:
        if not self.enabled:
            return self
        if self.type == "webhook" and not self.url:
            raise ValueError("a webhook channel needs url")
        if self.type in ("wecom", "dingtalk", "feishu") and not (self.key or self.url):
            raise ValueError(f"a {self.type} channel needs key (or url)")
        if self.heartbeat is not None and self.type not in MACHINE_CHANNEL_TYPES:
            raise ValueError(f"heartbeat is for machine channels ({', '.join(sorted(MACHINE_CHANNEL_TYPES))}); "
                             f"a {self.type} channel is read by people")
        if self.type == "printer" and not self.printer:
            raise ValueError("a printer channel needs a [channel.printer] table (kind = serial|network|usb|file)")
        if self.url:
            _check_http_url(self.url.get_secret_value())
        if self.type == "webhook":
            for secret in (self.secret, *self.secrets):
                if secret and not is_secret_ref(secret):   # a reference is checked when it is read
                    _check_webhook_secret(secret.get_secret_value())
        return self


_INERT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"replay sends nothing, signs nothing").decode()


# NATS defaults: the client port, and how long the server remembers a message id (a till restarting after
# a crash re-sends within minutes; an hour also covers an uplink outage ridden out by a leaf node).
NATS_PORT = 4222
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NATS_SECRETS = ("password", "token", "nkey_seed")


class NatsChannelConfig(_Strict):
    """``[[channel]] type = "nats"``: alert revisions (and, with ``events``, the till's own events) as
    CloudEvents on JetStream subjects ``settleguard.<shop_id>.<till_id>.<kind>`` (agent/delivery/channels/nats.py).

    A model of its own: nothing of a robot or a webhook applies. The properties at the end are the
    fields generic code reads of every channel (url, key, secret, secrets, printer, languages).
    """

    name: str
    type: Literal["nats"]
    # One server or several (a cluster; the shop's leaf node first): ``url = "nats://..."`` or a list.
    # Secrets, as every channel URL: one may carry user:password. Normalised to carry its port.
    servers: list[Secret] = Field(alias="url", min_length=1)
    stream: str = "SETTLEGUARD"
    create_stream: bool = False          # create the stream (subjects settleguard.>) when it is missing
    max_age: Duration | None = None      # the stream's limits, used only when this channel creates it
    max_bytes: int | None = None
    duplicate_window: Duration = timedelta(hours=1)
    events: bool = False                 # also the till's transactions, settlements, orders, ECR requests
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    nkey_seed: Secret | None = None      # an NKEY user seed ("SU..."): inline, env: or file:
    creds: str | None = None             # a .creds file (JWT + seed) as `nsc` writes it
    tls_ca: str | None = None            # PEM files; a tls:// URL or any of these turns TLS on
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    enabled: bool = True
    fallback: bool = False
    # The heartbeat interval on this channel (issue 19); what a heartbeat carries is built elsewhere.
    heartbeat: Duration | None = None

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _within(v, timedelta(seconds=10), timedelta(days=1))   # as ChannelConfig

    @field_validator("servers", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | SecretStr) else v

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[SecretStr]) -> list[SecretStr]:
        return [SecretStr(_nats_url(s.get_secret_value())) for s in v]

    @field_validator("stream")
    @classmethod
    def _stream(cls, v: str) -> str:
        if not _STREAM_NAME.fullmatch(v):
            raise ValueError("stream is a JetStream stream name: letters, digits, - and _ (at most 64)")
        return v

    @field_validator("max_bytes")
    @classmethod
    def _max_bytes(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("max_bytes is a number of bytes (at least 1); leave it out for no limit")
        return v

    @field_validator("duplicate_window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(seconds=1), timedelta(days=7))

    @model_validator(mode="after")
    def _auth(self) -> NatsChannelConfig:
        ways = [n for n, v in (("user", self.user), ("token", self.token), ("nkey_seed", self.nkey_seed),
                               ("creds", self.creds)) if v]
        if len(ways) > 1:
            raise ValueError(f"one way to log in to NATS, not {' and '.join(ways)}")
        if bool(self.user) != bool(self.password):
            raise ValueError("user and password go together")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together (the client certificate and its key)")
        if self.max_age is not None and self.duplicate_window > self.max_age:
            raise ValueError("duplicate_window cannot be longer than max_age (the server refuses such a stream)")
        return self

    # -- the fields generic code reads of every channel -------------------------------------------
    @property
    def url(self) -> SecretStr:
        """The first server (doctor checks it answers; the log redactor learns every server)."""
        return self.servers[0]

    @property
    def key(self) -> None:
        return None

    @property
    def secret(self) -> None:
        return None

    @property
    def secrets(self) -> list[SecretStr]:
        """Every value the log redactor must hide: the servers (userinfo) and the credentials."""
        return [*self.servers, *(s for s in (self.password, self.token, self.nkey_seed) if s is not None)]

    @property
    def printer(self) -> dict[str, Any]:
        return {}

    @property
    def languages(self) -> list[str]:
        return ["zh"]    # nobody reads a stream's wording: the CloudEvent carries the alert JSON

    def references(self) -> list[tuple[str, str]]:
        return [(n, reveal(getattr(self, n)) or "") for n in _NATS_SECRETS if is_secret_ref(getattr(self, n))]

    def resolved(self) -> NatsChannelConfig:
        values = {n: SecretStr(_resolve_field(n, r)) for n, r in self.references()}
        return self.model_copy(update=values) if values else self

    def inert(self) -> NatsChannelConfig:
        values = {n: SecretStr("replay-sends-nothing") for n, _ in self.references()}
        return self.model_copy(update=values) if values else self


def _nats_url(url: str) -> str:
    """A NATS server address with its port; the URL itself is never repeated (it may carry a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url is not a valid address ({exc})") from None
    if parts.scheme not in NATS_SCHEMES:
        got = f"{parts.scheme}:" if parts.scheme else "no scheme"
        raise ValueError(f"a NATS url starts with nats://, tls://, ws:// or wss:// (got {got})")
    if not parts.hostname:
        raise ValueError("url has no host name")
    if port == 0:
        raise ValueError("url: port 0 cannot be sent to")
    if port is None and parts.scheme in ("nats", "tls"):
        return parts._replace(netloc=f"{parts.netloc}:{NATS_PORT}").geturl()
    return url


def _channel_tag(v: Any) -> str:
    kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return "nats" if kind == "nats" else "other"


# The tag is not part of any field's path: parse_config drops it from error locations.
CHANNEL_TAGS = ("nats", "other")
AnyChannel = Annotated[Annotated[ChannelConfig, Tag("other")] | Annotated[NatsChannelConfig, Tag("nats")],
                       Discriminator(_channel_tag)]


def _resolve_field(field: str, reference: str) -> str:
    try:
        value = _resolve_secret(reference)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}; fix: {secret_fix(reference)}") from None
    if not value:
        raise ValueError(f"{field}: {reference} is empty; fix: {secret_fix(reference)}")
    return value


def unresolved_secrets(config: Config) -> list[tuple[str, str, str]]:
    """(where, what is wrong, the fix) for each enabled channel's secret and each till-page PIN that cannot
    be read now."""
    out: list[tuple[str, str, str]] = []
    for i, ch in enumerate(config.channel):
        if not ch.enabled:
            continue
        for name, reference in ch.references():
            if reference.startswith(CREDENTIALS_RUNTIME) and not Path(CREDENTIALS_RUNTIME[5:]).is_dir():
                # Outside the service (a shell on the till): LoadCredential= hands the service this file
                # from /etc/settleguard/credentials/ (systemd/settleguard.service); check that one.
                reference = CREDENTIALS_SOURCE + reference.removeprefix(CREDENTIALS_RUNTIME)
            try:
                problem = "" if _resolve_secret(reference) else f"{reference} is empty"
            except ValueError as exc:
                problem = str(exc)
            if problem:
                out.append((f"channel[{i}] ({ch.name}).{name}", problem, secret_fix(reference)))
    for i, person in enumerate(config.web.staff if config.web is not None else ()):
        reference = person.pin.get_secret_value()
        if not is_secret_ref(reference):
            continue
        where = f"web.staff[{i}] ({person.name}).pin"
        try:
            value = _resolve_secret(reference)
        except ValueError as exc:
            out.append((where, str(exc), secret_fix(reference)))
            continue
        try:
            _check_pin(value)
        except ValueError as exc:
            # It reads, but what it holds is no PIN: the fix is the value, not making it readable.
            holder = f"the environment variable {reference[4:]}" if reference.startswith("env:") else reference[5:]
            out.append((where, f"{reference} holds no valid PIN ({exc})",
                        f"put the PIN itself, 4 to 12 digits, in {holder}"))
    return out


def _check_http_url(url: str) -> None:
    """An address the delivery thread can send to. The URL itself is never repeated: it may carry a token."""
    try:
        parts = urlsplit(url)
        port = parts.port          # raises on a port out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"url is not a valid address ({exc})") from None
    if parts.scheme not in ("http", "https"):
        got = f"{parts.scheme}:" if parts.scheme else "no scheme"
        raise ValueError(f"url must start with http:// or https:// (got {got})")
    if not host:
        raise ValueError("url has no host name")
    if port == 0:
        raise ValueError("url: port 0 cannot be sent to")


def _check_webhook_secret(secret: str) -> None:
    """whsec_ + base64 (padding optional), as the signer decodes it at every delivery."""
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret must start with whsec_ (Standard Webhooks)")
    text = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64 (the part after whsec_ "
                         "does not decode)") from None
    if not key:
        raise ValueError("a webhook secret is whsec_ followed by base64 (nothing after whsec_)")


def _within(v: timedelta, low: timedelta, high: timedelta) -> timedelta:
    if not low <= v <= high:
        raise ValueError(f"must be between {_say(low)} and {_say(high)}")
    return v


def _say(v: timedelta) -> str:
    seconds = v.total_seconds()
    if seconds and seconds % 60 == 0 and seconds < 86400:
        h, m = divmod(int(seconds // 60), 60)
        return f"{h}h{m:02d}m" if h and m else (f"{h}h" if h else f"{m}m")
    for unit, size in (("d", 86400), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class DeliveryConfig(_Strict):
    group_wait: Duration = timedelta(seconds=10)
    group_interval: Duration = timedelta(seconds=60)
    repeat_interval: Duration = timedelta(minutes=30)
    timeout: Duration = timedelta(seconds=10)

    @field_validator("group_wait")
    @classmethod
    def _wait(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(0), timedelta(hours=1))

    @field_validator("group_interval")
    @classmethod
    def _interval(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(0), timedelta(days=1))

    @field_validator("repeat_interval")
    @classmethod
    def _repeat(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(minutes=1), timedelta(days=7))

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(seconds=1), timedelta(minutes=5))


class NotifyConfig(_Strict):
    """``[notify]``: the noise budget, what reaches a phone and when (agent/alerts/budget.py).

    Only channels people read (chat robots, the printer) are held or capped; a webhook still gets
    every alert revision at once.
    """

    # "auto": from the last closing of a shop day + quiet_grace until the next opening ([shop.hours];
    # a closed day is quiet all day; a shop without [shop.hours] has none). "off", or a fixed daily
    # range "22:00-08:00".
    quiet_hours: str = "auto"
    quiet_grace: Duration = timedelta(minutes=30)
    # Reminders of an open finding: at most this many, the first delivery.repeat_interval after the
    # last notice, each next one `reminder_growth` times longer (30m, 1h, 2h ...).
    reminders: int = Field(default=1, ge=0, le=10)
    reminder_growth: float = Field(default=2.0, ge=1.0, le=10.0)
    # The same for findings to verify (certainty "verify": TIME, VEL, ENTRY, AMT outliers): the
    # review lists them; by default they are not pushed again.
    verify_reminders: int = Field(default=0, ge=0, le=10)
    # Escalated findings (a refund to do): at most this many reminders, settlement.follow_up_days apart;
    # after that, and for refund_window after the escalation, only in the daily review's lines.
    escalated_reminders: int = Field(default=2, ge=0, le=10)
    refund_window: Duration = timedelta(days=30)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, v: str) -> str:
        if v in ("auto", "off"):
            return v
        start, sep, end = v.partition("-")
        if not sep:
            raise ValueError("must be \"auto\", \"off\" or a range like \"22:00-08:00\"")
        if _hhmm(start) == _hhmm(end):
            raise ValueError("start and end are equal; write \"off\" for no quiet hours")
        return v

    @field_validator("quiet_grace")
    @classmethod
    def _grace(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(0), timedelta(hours=6))

    @field_validator("refund_window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(days=1), timedelta(days=365))

    def fixed_quiet(self) -> tuple[dtime, dtime] | None:
        if self.quiet_hours in ("auto", "off"):
            return None
        start, _, end = self.quiet_hours.partition("-")
        return _hhmm(start), _hhmm(end)


class HealthConfig(_Strict):
    # How long the journal may stay unwritable (disk full, a write that keeps failing) before the
    # daemon says it is unhealthy, stops feeding the watchdog and lets systemd restart it. Long enough
    # to ride out a short stall, short enough that "healthy" still means "still seeing".
    journal_stall: Duration = timedelta(minutes=5)

    @field_validator("journal_stall")
    @classmethod
    def _stall(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(seconds=10), timedelta(hours=1))


class MetricsConfig(_Strict):
    # Who may scrape ("10.0.0.0/8", "192.168.1.5"): needed for any address but loopback (a chain's central
    # Prometheus on the LAN); others get 403. [] = anyone who can reach a loopback port. (Before listen:
    # listen's check reads it.)
    allow: list[str] = []
    listen: str | None = None          # e.g. "127.0.0.1:9477", or "10.1.2.3:9477" with allow; off when absent

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        for i, entry in enumerate(v):
            try:
                parse_allow([entry])
            except ValueError as exc:
                raise ValueError(f"allow[{i}]: {exc}") from None
        return v

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Metrics carry shop figures and have no authentication: beyond loopback only to listed scrapers."""
        if v is None:
            return v
        m = re.fullmatch(r"(\[[0-9A-Fa-f:]+\]|[^:\s\[\]]+):(\d{1,5})", v.strip())
        if not m or not 0 <= int(m.group(2)) < 65536:  # 0: any free port (tests)
            raise ValueError(f"must look like \"127.0.0.1:9477\" or \"10.1.2.3:9477\" (got {v!r})")
        host = m.group(1).strip("[]")
        if host != "localhost" and not is_ip_literal(host):
            raise ValueError(f"listen host {host!r} must be an IP address of this machine (or 0.0.0.0)")
        if host == "localhost" or ipaddress.ip_address(host).is_loopback or info.data.get("allow"):
            return v.strip()
        raise ValueError(f"{host} is not loopback: anyone on the LAN could read the shop's figures; add "
                         "allow = [\"10.0.0.0/8\"] with your Prometheus's address(es), or listen on 127.0.0.1")

    @property
    def allowed(self) -> tuple[Any, ...]:
        """The allow-list as networks (empty: no list)."""
        return parse_allow(self.allow)


class StaffConfig(_Strict):
    """One person who may sign in to the till page: a name the group sees, a PIN, a role."""

    name: str = Field(min_length=1, max_length=32)
    # Inline, env:NAME or file:PATH, as channel secrets, and like them read only where the page is served
    # (the daemon: preflight and the page), so replay or check-config on another machine needs no PINs.
    pin: Secret
    role: Literal["cashier", "manager"] = "cashier"

    def resolved(self) -> StaffConfig:
        """This person with the PIN read from its env:/file: reference; ValueError when it cannot be."""
        raw = self.pin.get_secret_value()
        if not is_secret_ref(raw):
            return self
        return self.model_copy(update={"pin": SecretStr(_check_pin(_resolve_secret(raw)))})

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(not ch.isprintable() for ch in v):
            raise ValueError("must be a printable name like \"小王\"")
        return v

    @field_validator("pin")
    @classmethod
    def _pin(cls, v: SecretStr) -> SecretStr:
        if not is_secret_ref(v):
            _check_pin(v.get_secret_value())
        return v


def _check_pin(pin: str) -> str:
    # Digits only, so a phone shows its number pad; 4 at least, and the page locks a client out
    # after a few wrong tries (agent/web/auth.py), which is what makes a short PIN bearable.
    if not re.fullmatch(r"\d{4,12}", pin):
        raise ValueError("a PIN is 4 to 12 digits")
    return pin


class WebConfig(_Strict):
    """The till page (agent/web/): absent section, no page."""

    listen: str                          # "0.0.0.0:8087", "192.168.1.20:8087", "127.0.0.1:8087"; port 0: any free
    public_url: str | None = None        # what links in messages point to: "http://192.168.1.20:8087"
    legit_needs: Literal["manager", "anyone"] = "manager"
    # A signed-in phone stays signed in this long without being used, and never longer than a day's shift.
    session_idle: Duration = timedelta(hours=4)
    session_max: Duration = timedelta(hours=14)
    staff: list[StaffConfig] = []

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        try:
            host, _ = parse_host_port(v.strip())
        except ValueError:
            raise ValueError(f"must look like \"0.0.0.0:8087\" or \"192.168.1.20:8087\" (got {v!r})") from None
        if not (host == "localhost" or is_ip_literal(host)):
            raise ValueError(f"listen host {host!r} must be an IP address of this machine (or 0.0.0.0)")
        return v.strip()

    @field_validator("public_url")
    @classmethod
    def _public(cls, v: str | None) -> str | None:
        if v is not None:
            _check_http_url(v)
            v = v.rstrip("/")
        return v

    @field_validator("session_idle", "session_max")
    @classmethod
    def _session(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(minutes=5), timedelta(days=2))

    @model_validator(mode="after")
    def _people(self) -> WebConfig:
        _distinct(self.staff)
        return self

    def resolved(self) -> WebConfig:
        """The page's settings with every PIN read (the daemon, where the page is served); ValueError
        naming ``staff[i] (name).pin`` when one cannot be read or two people end up with one PIN."""
        staff, problems = self.readable_staff()
        if problems:
            raise ValueError(problems[0])
        _distinct(staff)
        return self.model_copy(update={"staff": staff})

    def readable_staff(self) -> tuple[list[StaffConfig], list[str]]:
        """Each person whose PIN reads now (PIN read), and ``staff[i] (name).pin: why`` for each whose
        PIN does not: the page signs in the first while the second are fixed."""
        staff: list[StaffConfig] = []
        problems: list[str] = []
        for i, person in enumerate(self.staff):
            try:
                staff.append(person.resolved())
            except ValueError as exc:
                problems.append(f"staff[{i}] ({person.name}).pin: {exc}")
        return staff, problems


def _distinct(staff: list[StaffConfig]) -> None:
    names: set[str] = set()
    pins: set[str] = set()
    for person in staff:
        if person.name in names:
            raise ValueError(f"two [[web.staff]] entries are named {person.name!r}")
        # A PIN names who answered: two people sharing one could not be told apart. (References not read
        # yet are compared once they are: WebConfig.resolved.)
        pin = person.pin.get_secret_value()
        if not is_secret_ref(pin) and pin in pins:
            raise ValueError(f"{person.name} has the same PIN as someone else; give each person their own")
        names.add(person.name)
        pins.add(pin)


class MatchConfig(_Strict):
    """[match]: the till's sales matched against the terminal's charges (agent/match.py; README, "Till orders
    and the MATCH rules"). Off unless ``sources`` names the [[source]]s that carry the till's orders."""

    sources: list[str] = []            # [[source]] names whose orders are this till's sales; [] = off
    window: Duration = timedelta(minutes=5)            # a sale's tender and its charge at most this far apart
    grace: Duration = timedelta(minutes=2)             # an unmatched charge waits this long for its sale
    duplicate_window: Duration = timedelta(minutes=30)  # a second charge for a sale this long after it
    # ECR links (MATCH-004): how long the till waits for the terminal's answer before it shows "failed".
    # None: only an abort the wire shows (ZVT 06 B0) or a till's own "timed_out" line counts as giving up.
    till_timeout: Duration | None = None

    @field_validator("till_timeout")
    @classmethod
    def _till_timeout(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _within(v, timedelta(seconds=5), timedelta(minutes=30))

    @field_validator("window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(seconds=10), timedelta(hours=2))

    @field_validator("grace")
    @classmethod
    def _grace(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(0), timedelta(hours=1))

    @field_validator("duplicate_window")
    @classmethod
    def _duplicate(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(minutes=1), timedelta(days=1))

    @model_validator(mode="after")
    def _duplicates_reach_past_matches(self) -> MatchConfig:
        if self.duplicate_window < self.window:
            raise ValueError("duplicate_window must be at least window (a second charge is looked for further "
                             "back than a first)")
        return self


class TerminalConfig(_Strict):
    """[terminal]: the card terminal a shop has, for remedies (agent/alerts/remedy.py) and evidence.

    ``model`` picks that model's menu paths from the remedy data (config/remedies/*.toml); a model
    the data does not know gets the generic steps. ``models`` names the model per terminal id when a
    shop has several. The merchant fields fill the evidence bundle and the draft statement when the
    terminal's own messages do not carry them.
    """

    model: str | None = None                    # e.g. "PAX A920"; None: the generic steps
    models: dict[str, str] = {}                 # terminal id -> model, where a shop has several
    merchant_id: str | None = None              # 商户编号, when transactions do not carry it
    merchant_name: str | None = None            # 商户名称 as the acquirer knows it (default: [shop] name)
    acquirer: str | None = None                 # 收单机构, addressed by the draft statement
    remedies: str | None = None                 # a directory of the installer's own remedy files


class HistoryConfig(_Strict):
    """[history]: the rolling capture of decoded, card-masked events per source (agent/history.py), kept in
    the state directory as one JSON-lines file per source and shop day, which ``replay --protocol jsonl``
    reads; the oldest files go first once ``keep`` or ``max_mb`` is passed."""

    enabled: bool = True
    keep: Duration = timedelta(days=45)   # files older than this go
    max_mb: int = Field(default=200, ge=1, le=100_000)   # all sources together; the oldest day goes first

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: timedelta) -> timedelta:
        return _within(v, timedelta(days=1), timedelta(days=3660))


class Config(_Strict):
    shop: ShopConfig = ShopConfig()
    settlement: SettlementConfig = SettlementConfig()
    source: list[SourceConfig] = []
    rules: dict[str, dict[str, Any]] = {}
    channel: list[AnyChannel] = []
    delivery: DeliveryConfig = DeliveryConfig()
    metrics: MetricsConfig = MetricsConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig | None = None        # the till page; absent = no page
    match: MatchConfig = MatchConfig()
    terminal: TerminalConfig = TerminalConfig()
    notify: NotifyConfig = NotifyConfig()
    history: HistoryConfig = HistoryConfig()

    @property
    def legit_needs(self) -> str:
        """Who may answer "legit" ([web] legit_needs); without the page only a shell on the till answers."""
        return self.web.legit_needs if self.web is not None else "anyone"

    @model_validator(mode="after")
    def _match_sources(self) -> Config:
        names = {s.name for s in self.source}
        unknown = [n for n in self.match.sources if n not in names]
        if unknown:
            raise ValueError(f"match.sources: no [[source]] is named {unknown[0]!r}")
        return self

    @model_validator(mode="after")
    def _ecr_pairs(self) -> Config:
        names = {s.name: s for s in self.source}
        for s in self.source:
            other = names.get(s.pair) if s.pair is not None else None
            if s.pair is not None and (other is None or other is s):
                raise ValueError(f"source {s.name}: pair = {s.pair!r} names no other [[source]]")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, items in (("source", self.source), ("channel", self.channel)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"two [[{kind}]] entries are named {item.name!r}")
                seen.add(item.name)
        return self


class LoadedConfig:
    """A validated configuration plus what was derived from it (rule parameters, zone)."""

    def __init__(self, config: Config, rule_params: dict[str, Any], path: str, text: str, *,
                 files: list[str] | None = None) -> None:
        self.config = config
        self.rule_params = rule_params
        self.path = path
        self.text = text        # the file's own text (not what it includes)
        self.files = list(files or [])   # the files it includes, directly or not: reload watches them too
        self.tz = config.shop.tzinfo()
        self.hours = None
        if config.shop.hours is not None:
            self.hours = HoursConfig.model_validate(config.shop.hours)


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a pydantic error location in TOML text."""
    lines = text.splitlines()
    header_re = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key_re = re.compile(r"^\s*\"?([A-Za-z0-9_\-]+)\"?\s*=")
    path = [str(p) for p in loc]
    # Arrays of tables: ("source", 1, "baudrate") -> the second [[source]] header.
    table: list[str] = []
    occurrence: dict[str, int] = {}
    best: int | None = None
    for i, line in enumerate(lines, start=1):
        m = header_re.match(line)
        if m:
            name = m.group(1).replace('"', "")
            table = name.split(".")
            if line.lstrip().startswith("[["):
                occurrence[name] = occurrence.get(name, -1) + 1
                table = [*table, str(occurrence[name])]
            if table == path[: len(table)] and best is None and len(table) == len(path):
                best = i
            continue
        km = key_re.match(line)
        if km:
            full = [*table, km.group(1)]
            if full == path[: len(full)]:
                if len(full) == len(path):
                    return i
                best = best or i
            elif table and table == path[: len(table)] and best is None and len(path) == len(table) + 1:
                pass
    if best is None and path:
        # The field is missing: point at its table header.
        for i, line in enumerate(lines, start=1):
            m = header_re.match(line)
            if m and m.group(1).replace('"', "").split(".") == path[:1]:
                return i
    return best


def parse_config(text: str, path: str = "<config>") -> LoadedConfig:
    """Validate ``text`` (the file at ``path``), with the files it ``include``s (agent/config_include.py)
    merged under it; every error names the file, line and field the offending value came from."""
    from agent import config_include as inc

    path = str(path)   # callers pass a Path too
    try:
        stack = inc.layers(inc.parse_toml(text, path), text, path, locate=_locate)
    except inc.IncludeError as exc:
        raise ConfigError(exc.file, exc.field, exc.message, exc.line) from None
    raw = inc.merge(stack)

    def fail(loc: tuple[Any, ...], field: str, message: str) -> ConfigError:
        layer = inc.origin(stack, loc)
        return ConfigError(layer.path, field, message, _locate(layer.text, loc))

    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if loc[:1] == ("channel",) and len(loc) > 2 and loc[2] in CHANNEL_TAGS:
            loc = loc[:2] + loc[3:]   # the channel model's tag (AnyChannel) is no field a person wrote
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see config/settleguard.example.toml)"
        else:
            message = err["msg"].removeprefix("Value error, ")
            secret_field = ((loc[:1] == ("channel",)
                             and any(p in ("url", "key", "secret", "secrets", *_NATS_SECRETS) for p in loc))
                            or (loc[:1] == ("web",) and "pin" in loc))
            if ("input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict)
                    and not secret_field):  # a refused secret is not echoed into the logs
                message += f" (got {err['input']!r})"
        raise fail(loc, _pretty_field(loc, raw), message) from None
    try:
        rule_params = validate_rule_params(config.rules)
    except RuleConfigError as exc:
        loc = tuple(exc.path.split("."))
        message = exc.message.replace("Value error, ", "")
        if message.startswith("Extra inputs are not permitted"):
            message = "unknown key (check the spelling; see config/settleguard.example.toml)"
        raise fail(loc, exc.path, message) from None
    try:
        return LoadedConfig(config, rule_params, path, text, files=[layer.path for layer in stack[:-1]])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ("shop", "hours", *err["loc"])
        raise fail(loc, ".".join(str(p) for p in loc), err["msg"].removeprefix("Value error, ")) from None


def _pretty_field(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """("source", 0, "baudrate") -> source[0] (terminal).baudrate : names what a person sees."""
    parts: list[str] = []
    node: Any = raw
    for p in loc:
        if isinstance(p, int):
            label = f"[{p}]"
            if isinstance(node, list) and p < len(node) and isinstance(node[p], dict) and "name" in node[p]:
                label = f"[{p}] ({node[p]['name']})"
            parts[-1] = parts[-1] + label if parts else label
        else:
            parts.append(str(p))
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc}") from None
    return parse_config(text, str(p))
