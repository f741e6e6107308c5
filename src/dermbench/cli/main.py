"""``dermbench`` entry point.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``.
Modules are imported when the parser is built; they must stay light (no torch at import).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from .. import __version__
from ..errors import DermbenchError, quote
from ..utils.console import configure

#: subcommand -> module, in the order ``--help`` shows them (the study's workflow order).
COMMANDS: dict[str, str] = {
    "ls": "dermbench.cli.ls",
    "synth": "dermbench.cli.synth",
    "prepare": "dermbench.cli.prepare",
    "merge": "dermbench.cli.merge",
    "audit": "dermbench.cli.audit",
    "export-hdf5": "dermbench.cli.export",
    "validate": "dermbench.cli.validate",
    "finetune": "dermbench.cli.finetune",
    "embed": "dermbench.cli.embed",
    "probe": "dermbench.cli.probe",
    "zeroshot": "dermbench.cli.zeroshot",
    "run": "dermbench.cli.run",
    "score": "dermbench.cli.score",
    "report": "dermbench.cli.report",
    "predict": "dermbench.cli.predict",
    "demo": "dermbench.cli.demo",
}

DESCRIPTION = """\
dermbench: benchmark binary skin-lesion malignancy classifiers (benign vs malignant) with the
same data, splits and metrics across three paradigms: finetune, zeroshot and probe.

typical workflow:
  dermbench synth --out datasets/synth          # or: dermbench prepare ham10000 --raw DIR --out datasets/ham10000
  dermbench validate datasets/synth             # check a dataset folder against the contract
  dermbench run configs/demo.yaml               # datasets x models x seeds -> runs/
  dermbench report runs --out report            # tables, plots, index.html
"""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit 2, like every other
    error of the command line (argparse prints the whole usage block first)."""

    def error(self, message: str):  # type: ignore[override]
        from ..errors import LINE_LIMIT

        text = " ".join(str(message).split())[:LINE_LIMIT]
        self.exit(2, f"error: {self.prog}: {text} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="dermbench", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dermbench {__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors on the console")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        command = importlib.import_module(module_name).add_parser(sub)
        # --quiet works before or after the command name
        if not any("--quiet" in a.option_strings for a in command._actions):
            command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                                 help="only warnings and errors on the console")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed on one line
        return _exit_status(exc)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure(quiet=args.quiet)
    if not sys.stderr.isatty():
        # progress bars written to a log file: one update every 30 s rather than many per second
        # (utils.console.progress does this itself; this is for other libraries' bars, e.g. downloads)
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:  # a command's own option parser (prepare SOURCE ...)
        return _exit_status(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dermbench ls | head`): stop quietly, like SIGPIPE would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 141
    except DermbenchError as exc:  # its message says what is wrong and what to do: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        # a path any command is given can be over the file system's limit (255 bytes a name)
        print(f"error: a file or folder name is too long for the file system: {quote(exc.filename)}; "
              "use a shorter one", file=sys.stderr)
        return 2


def _exit_status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


if __name__ == "__main__":
    raise SystemExit(main())
