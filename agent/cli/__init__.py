"""``settleguard`` command line: one module per command, each adding its own sub-parser.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 65 bad input data, 78 bad configuration.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from agent import __version__
from agent.cli import ack, alerts, check_config, decode, demo, doctor, export, fleet, replay, run, simulate, template
from agent.cli.common import EX_OK

COMMANDS = (run, demo, simulate, decode, check_config, replay, export, ack, alerts, doctor, template, fleet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="settleguard", description="Flags suspicious card transactions before the "
                                "batch settles, while a void (撤销) is still possible.")
    p.add_argument("--version", action="version", version=f"settleguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_OK

