"""`tinylm <command>`: one thin entry point over the library.

Each command lives in its own module under `tinylm.commands` and declares NAME, ORDER (its place in
`--help`, following the user's path), HELP, EXAMPLES, `add_arguments(parser)` and `run(args)`.
Command modules import only argparse-level things at top level so `tinylm --help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import signal
import sys
from collections.abc import Callable
from types import ModuleType

from tinylm import __version__, commands
from tinylm.errors import TinyLMError
from tinylm.fileio import os_error


def _command_modules() -> list[ModuleType]:
    mods = [importlib.import_module(f"tinylm.commands.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: (m.ORDER, m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinylm",
        description="Train, shrink and run small language models (GPT-2 and Llama-2 architectures).",
        epilog="Run `tinylm <command> --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=mod.HELP,
            epilog="examples:\n" + mod.EXAMPLES.strip("\n") if getattr(mod, "EXAMPLES", "") else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        try:
            mod.add_arguments(p)
        except ImportError as e:  # a package this install lacks (torch): the other commands still work
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(_run=_missing_package(e))
            continue
        p.set_defaults(_run=mod.run)
    return parser


def _missing_package(e: ImportError) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise TinyLMError(f"this command needs the package {e.name or e}, which is not installed; pip install {e.name}")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    with contextlib.suppress(ValueError):  # (not the main thread: no signal handlers)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args._run(args) or 0)
    except TinyLMError as e:
        print(f"tinylm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # one not met where it happened: still one line naming the path and the fix
        print(f"tinylm {args.command}: error: {os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tinylm {args.command}: interrupted", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary files are removed and the message is one line."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
