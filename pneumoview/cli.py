"""The ``pneumoview`` command: the GUI by default, sub-commands for headless work.

Each sub-command lives in its own module that exposes ``configure(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``pneumoview --help`` and the GUI start fast. ``train`` lives in the separate
``training`` package (which depends on ``pneumoview``, never the reverse) and is
dispatched here by name only.

Errors end at this edge as ONE line on stderr and exit code 2: a ``PneumoViewError``'s message,
or for an ``OSError`` that escaped a command (home, cache or output folder) ``disk full: PATH``
or ``cannot write PATH: REASON``. No traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pneumoview import __version__
from pneumoview.errors import PneumoViewError, storage_error

#: sub-command -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gui": ("pneumoview.ui.app", "start the desktop application (the default)"),
    "scan": ("pneumoview.commands.scan", "list the DICOM studies in a folder and any unreadable files"),
    "analyze": ("pneumoview.commands.analyze", "analyse a folder with a model bundle and write a CSV report"),
    "models": ("pneumoview.commands.models", "list, activate or roll back trained model bundles"),
    "listen": ("pneumoview.commands.listen", "receive studies over DICOM (Storage SCP) into an inbox folder"),
    "pacs": ("pneumoview.commands.pacs", "find, retrieve and send studies and results (DICOM or DICOMweb)"),
    "readings": ("pneumoview.commands.readings", "export ILO readings (CSV, one-page PDF per study)"),
    "train": ("training.cli", "retrain PneumoLLM's adapters on labelled radiographs"),
    "calibrate": ("pneumoview.commands.calibrate", "choose the operating point (threshold) on labelled data"),
    "audit": ("pneumoview.commands.audit", "verify or export the hash-chained audit log"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoview", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"PneumoView {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        # Options are declared by the module itself, imported only for the command being run.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in {"-h", "--help", "--version"}:
        argv = ["gui", *argv]
    if argv[0] in SUBCOMMANDS:
        module_name, help_text = SUBCOMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        sub_parser = argparse.ArgumentParser(prog=f"pneumoview {argv[0]}", description=help_text)
        module.configure(sub_parser)
        args = sub_parser.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except PneumoViewError as exc:
            print(f"pneumoview {argv[0]}: error: {exc.message}", file=sys.stderr)
            return 2
        except OSError as exc:  # home, cache or output folder: "disk full: PATH" / "cannot write PATH: REASON"
            print(f"pneumoview {argv[0]}: error: {storage_error(exc).message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"pneumoview {argv[0]}: cancelled", file=sys.stderr)
            return 130
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
