#!/usr/bin/env bash
# CI: the unit must pass `systemd-analyze verify` without a word and keep its exposure <= MAX_EXPOSURE.
#
# verify insists that ExecStart= names an executable that exists. The unit points at the installed path
# (/opt/settleguard/venv/bin/settleguard), which a CI machine does not have, so we check a temporary
# copy whose only difference is ExecStart= rewritten to this checkout's venv. The file name stays
# settleguard.service because verify derives the unit name (and its checks) from it.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
UNIT=${UNIT:-systemd/settleguard.service}
BIN=${SETTLEGUARD_BIN:-$PWD/.venv/bin/settleguard}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-unit: installing systemd (for systemd-analyze only; nothing is started)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
[ -x "$BIN" ] || { echo "check-unit: $BIN missing (run make first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/opt/settleguard/venv/bin/settleguard #ExecStart=$BIN #" "$UNIT" > "$tmp/settleguard.service"
grep -q "^ExecStart=$BIN " "$tmp/settleguard.service" || { echo "check-unit: ExecStart= not rewritten" >&2; exit 1; }

out=$(systemd-analyze verify "$tmp/settleguard.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
    echo "check-unit: systemd-analyze verify is not clean:" >&2
    echo "$out" >&2
    exit 1
fi
echo "check-unit: systemd-analyze verify: clean"

report=$(systemd-analyze security --offline=yes "$tmp/settleguard.service" 2>&1 || true)
level=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for settleguard.service: \([0-9.]*\).*/\1/p')
if [ -z "$level" ]; then
    echo "$report" >&2
    echo "check-unit: no exposure figure in the report" >&2
    exit 1
fi
if awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l > m) }'; then
    printf '%s\n' "$report" | grep -v '✓' >&2
    echo "check-unit: exposure $level > $MAX_EXPOSURE" >&2
    exit 1
fi
echo "check-unit: exposure $level <= $MAX_EXPOSURE"
