"""Start-up stays cheap (issue 20): what each command imports, the lazily built HTTP sender, templates parsed
once. Not timed (bench/startup.py measures); these check the structure that makes it fast."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from agent.service.sender import LazyHttpxSender
from drivers.receipts import load_templates, normalise
from drivers.receipts.extract import LABEL_TAIL

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# Runs the command in a fresh interpreter, then reports which heavy packages it had imported.
PROBE = """
import io, json, sys, contextlib
from agent.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = ("pydantic", "agent.config", "agent.rules", "httpx", "apscheduler", "agent.pipeline", "sqlite3", "asyncio",
         "ssl", "nats", "agent.fleet.stream")
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}), file=sys.stderr)
"""


def _loaded(*args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"]


def test_decode_and_help_import_neither_pydantic_nor_the_rules() -> None:
    assert _loaded("--help") == (0, [])
    assert _loaded("decode", "--protocol", "zvt", str(DATA / "zvt" / "ecrterm_040f_status_girocard_40eur.hex")) \
        == (0, [])
    assert _loaded("decode", "--protocol", "escpos", str(DATA / "escpos" / "preview-tools-receipt.bin")) == (0, [])


def test_check_config_still_loads_the_configuration_and_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[shop]\nname = "店"\ntill = "t1"\ntimezone = "Nowhere/Atlantis"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())",
                           "check-config", str(bad)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 78
    assert f"{bad}, line 4: shop.timezone" in proc.stderr


def test_config_error_is_one_class_whichever_module_it_is_imported_from() -> None:
    from agent.cli.common import ConfigError as from_cli
    from agent.config import ConfigError as from_config
    from agent.config_errors import ConfigError

    assert from_cli is from_config is ConfigError


def test_the_http_sender_is_built_on_first_use_once_and_closed_if_built() -> None:
    lazy = LazyHttpxSender(timeout=3.0)
    assert not lazy.built
    first = lazy.ensure()
    assert lazy.built and lazy.ensure() is first
    assert first.client.timeout.connect == 3.0
    lazy.close()
    assert first.client.is_closed


def test_building_the_http_sender_leaves_httpx_s_command_line_tool_out() -> None:
    """Flask installs click, so httpx would import its CLI (click, rich's console, pygments: 4.6 MiB) with the
    sender at the first alert; the sender's module keeps it out, and a request still goes through httpx."""
    probe = ("import json, sys; from agent.service.sender import LazyHttpxSender; s = LazyHttpxSender(timeout=1.0);"
             " s.ensure(); import httpx; print(json.dumps([sorted(m for m in ('click', 'pygments', 'rich.console')"
             " if m in sys.modules), httpx.Client is type(s.ensure().client)]))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [[], True], proc.stderr


def test_closing_the_http_sender_before_it_is_built_builds_nothing() -> None:
    lazy = LazyHttpxSender(timeout=3.0)
    lazy.close()
    assert not lazy.built
    # A send racing the shutdown builds it afterwards: closed at once, so nothing is left open.
    assert lazy.ensure().client.is_closed


def test_bundled_templates_are_parsed_once_per_process() -> None:
    assert [id(t) for t in load_templates()] == [id(t) for t in load_templates()]


def test_the_label_tail_matched_apart_ends_where_the_joined_regex_ends() -> None:
    """Labels are compiled without the bilingual tail (13x cheaper); matching the tail right after the label
    must give the same end as the regex with the tail appended, on every label and a range of lines."""
    lines = [normalise(x) for x in (
        "凭证号(VOUCHER NO):000123", "凭证号 VOUCHER NO: 000123", "凭证号/VOUCHER NO:000123", "VOUCHER NO 凭证号:1",
        "VOUCHER NO/凭证号: 1", "凭证号：000123", "凭证号 000123", "金额(AMOUNT):RMB 12.00", "金额: RMB", "AMOUNT",
        "卡号(CARD NO):622576******6691 /C", "交易类型(TRANS TYPE):消费(SALE)", "日期/时间(DATE/TIME):2026/11/27 09:00",
        "终端编号(TERMINAL NO):15221155", "参考号 (REFER NO) : 925498330001", "合计：12.80", "实收: 20.00",
        "找零 7.20", "支付方式：现金", "TOTAL 12.80", "原凭证号(ORIG VOUCHER NO):000001", "AUTH NO:123456",
    )]
    checked = 0
    for template in load_templates():
        for rule in template.fields:
            for label in rule.labels:
                joined = re.compile(label.pattern + LABEL_TAIL.pattern, re.IGNORECASE)
                for line in lines:
                    for p in [0, *(i + 1 for i, c in enumerate(line) if c == " ")]:
                        whole = joined.match(line, p)
                        alone = label.match(line, p)
                        apart = LABEL_TAIL.match(line, alone.end()) if alone else None
                        assert (whole.end() if whole else None) == (apart.end() if apart else None), \
                            (template.name, label.pattern, line, p)
                        checked += whole is not None
    assert checked > 30


def test_normalise_skips_translate_only_when_nothing_would_change() -> None:
    """normalise() translates a line only when it has a full-width character (issue 20 fast path): the result
    must equal translating every line."""
    import random

    from drivers.receipts.lines import _WIDTH

    rng = random.Random(20)
    alphabet = ([chr(c) for c in range(0x20, 0x7F)] + [chr(c) for c in range(0xFF01, 0xFF5F)]
                + ["\u3000", "\u00a0", "\uffe5", "金", "额", "凭", "证"])
    for _ in range(5000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        full = " ".join(line.translate(_WIDTH).split())
        got = normalise(line)
        if ":" not in full and "=" not in full:          # (the currency-separator fix is the same either way)
            assert got == full, (line, got, full)
        assert normalise(line.translate(_WIDTH)) == got


def test_the_daemon_is_ready_without_building_the_http_client(tmp_path: Path) -> None:
    from agent.sim.terminal import PtyTerminal
    from tests.helpers import daemon_on_pty

    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    try:
        assert isinstance(daemon.sender, LazyHttpxSender) and not daemon.sender.built
    finally:
        daemon.stop()
        term.close()
