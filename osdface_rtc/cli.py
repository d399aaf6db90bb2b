"""`osdface-rtc` command line: one subcommand per module in ``osdface_rtc.commands``.

Each command module defines ``register(subparsers)`` which adds its parser and sets
``func(args) -> int`` as the handler. Heavy imports happen inside the handlers.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

#: Subcommands in the order they appear in ``--help``.
COMMANDS = ("enhance", "serve", "restorer-serve", "bench", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osdface-rtc",
        description="Live face enhancement for video calls (one-step diffusion restorer).",
    )
    parser.add_argument("--version", action="version", version=f"osdface-rtc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"osdface_rtc.commands.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
