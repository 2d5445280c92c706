"""The shipped unit, udev rule and installer: checked with systemd's own tools where they exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "settleguard.service"
RULES = ROOT / "systemd" / "60-settleguard.rules"
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze not installed (CI installs it in .ci/run)")


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_asks_for_what_the_daemon_implements() -> None:
    d = directives()
    assert d["Type"] == ["notify"] and d["RestartPreventExitStatus"] == ["78"] and d["Restart"] == ["on-failure"]
    assert d["WatchdogSec"] and d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["DevicePolicy"] == ["closed"] and "PrivateDevices" not in d
    assert {v.split()[0] for v in d["DeviceAllow"]} >= {"char-ttyUSB", "char-ttyACM", "char-ttyS"}
    assert d["SupplementaryGroups"] == ["dialout"] and d["DynamicUser"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["StateDirectory"] == ["settleguard"] and d["ConfigurationDirectory"] == ["settleguard"]
    assert all(v.split(":", 1)[1].startswith("/etc/settleguard/credentials/") for v in d["LoadCredential"])


@needs_systemd_analyze
def test_ci_check_passes_verify_and_the_exposure_budget() -> None:
    proc = subprocess.run([str(ROOT / "systemd" / "check-unit.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    level = float(re.search(r"exposure ([0-9.]+) <=", proc.stdout).group(1))  # type: ignore[union-attr]
    assert level <= 2.0


@needs_systemd_analyze
def test_ci_check_fails_a_broken_or_looser_unit(tmp_path: Path) -> None:
    broken = tmp_path / "settleguard.service"
    broken.write_text(UNIT.read_text(encoding="utf-8").replace("Type=notify", "Type=notfiy"), encoding="utf-8")
    proc = subprocess.run([str(ROOT / "systemd" / "check-unit.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "UNIT": str(broken)})
    assert proc.returncode != 0 and "notfiy" in proc.stderr
    loose = "\n".join(line for line in UNIT.read_text(encoding="utf-8").splitlines()
                      if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability",
                                              "DevicePolicy", "DeviceAllow", "NoNewPrivileges")))
    broken.write_text(loose + "\n", encoding="utf-8")
    proc = subprocess.run([str(ROOT / "systemd" / "check-unit.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "UNIT": str(broken)})
    assert proc.returncode != 0 and "exposure" in proc.stderr


def test_udev_rule_names_both_adapters_for_every_common_chip() -> None:
    text = RULES.read_text(encoding="utf-8")
    rules = [line for line in text.splitlines() if line.startswith("SUBSYSTEM==")]
    for vid, pid in (("0403", "6001"), ("067b", "2303"), ("1a86", "7523"), ("10c4", "ea60")):
        assert any(f'ATTRS{{idVendor}}=="{vid}"' in r and f'ATTRS{{idProduct}}=="{pid}"' in r for r in rules)
    assert {m for r in rules for m in re.findall(r'SYMLINK\+="([^"]+)"', r)} == {"settleguard-terminal",
                                                                             "settleguard-printer"}
    assert all('GROUP="dialout"' in r and 'MODE="0660"' in r for r in rules)
    assert any("ENV{ID_PATH}==" in r for r in rules) and any("KERNELS==" in r for r in rules)


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="this machine runs systemd: would install")
def test_install_refuses_politely_without_a_running_systemd() -> None:
    proc = subprocess.run([str(ROOT / "systemd" / "install.sh")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "not running systemd" in proc.stdout
