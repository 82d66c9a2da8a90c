"""The ``nnhealth`` command: one sub-command per module in :mod:`nnhealth.commands`.

Each command module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). Exit status 2 means a usage error.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

#: command modules, in the order ``nnhealth --help`` lists them
COMMANDS = ("demo", "check", "report", "rules", "explain")


def _load(name: str):
    try:
        return importlib.import_module(f"nnhealth.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"nnhealth.commands.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnhealth",
        description="A doctor for neural-network training runs: watches the statistics of a training "
                    "and says, in plain words, what is going wrong and what to try.",
        epilog="Run 'nnhealth COMMAND --help' for the options of one command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nnhealth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"nnhealth {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
