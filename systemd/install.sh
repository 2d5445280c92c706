#!/usr/bin/env bash
# Install settleguard as a systemd service on a Debian/Ubuntu till (docs/INSTALL.md explains each step).
# Idempotent: run it again after `git pull` to upgrade; an existing configuration is never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PREFIX=${PREFIX:-/opt/settleguard}
PYTHON=${PYTHON:-python3}
ETC=/etc/settleguard

say() { printf 'install: %s\n' "$*"; }

if [ ! -d /run/systemd/system ]; then
    say "this machine is not running systemd (no /run/systemd/system), so there is nothing to install into."
    say "Run settleguard by hand instead: settleguard run --config FILE --state DIR (see docs/INSTALL.md)."
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    say "needs root: sudo make install"
    exit 1
fi

say "python environment in $PREFIX/venv"
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$SRC"
install -d -m 0755 "$PREFIX/docs"
install -m 0644 docs/INSTALL.md "$PREFIX/docs/INSTALL.md"

say "unit and udev rule"
install -m 0644 systemd/settleguard.service /etc/systemd/system/settleguard.service
install -m 0644 systemd/60-settleguard.rules /etc/udev/rules.d/60-settleguard.rules
udevadm control --reload || true
udevadm trigger --subsystem-match=tty || true

say "configuration in $ETC"
install -d -m 0755 "$ETC"
if [ ! -e "$ETC/settleguard.toml" ]; then
    install -m 0640 config/settleguard.example.toml "$ETC/settleguard.toml"
    say "created $ETC/settleguard.toml from the example: edit it for this shop"
else
    say "kept the existing $ETC/settleguard.toml"
fi
# LoadCredential= fails the start when a file is missing: empty placeholders until the secrets arrive.
install -d -m 0700 "$ETC/credentials"
for name in wecom-key webhook-secret; do
    [ -e "$ETC/credentials/$name" ] || install -m 0600 /dev/null "$ETC/credentials/$name"
done

systemctl daemon-reload
systemctl enable settleguard.service >/dev/null
# The service validates its configuration itself (secrets under /run/credentials exist only inside it);
# a bad one exits 78, which RestartPreventExitStatus= keeps from looping.
systemctl restart settleguard.service || true
sleep 3
if systemctl is-active --quiet settleguard.service; then
    say "running; check with: sudo $PREFIX/venv/bin/settleguard doctor"
else
    say "not running yet -- usually the configuration: edit $ETC/settleguard.toml, then"
    say "  sudo systemctl restart settleguard; journalctl -u settleguard -n 20 shows why it stopped"
fi
