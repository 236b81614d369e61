"""The ``automl-transfer`` command line.

``main`` parses the global options, loads the plugins (skipping ``--disable-plugins``) and hands
over to the subcommand. Subcommands live in ``automl_transfer/commands/<name>.py``, listed in
:data:`automl_transfer.commands.COMMAND_MODULES`; each has ``add_parser(subparsers)`` and
``run(args) -> int``. Building the parser imports no torch, timm or optuna (a command imports
what it needs when it runs), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from automl_transfer import __version__, registry
from automl_transfer.commands import COMMAND_MODULES
from automl_transfer.errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    AutoMLTransferError,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with the global options and one subparser per command module.

    Each subparser gets a ``run`` default: the ``run(args)`` function of its module.
    """
    parser = argparse.ArgumentParser(
        prog="automl-transfer",
        description="Search pretrained backbones, heads and fine-tuning settings for an image dataset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--disable-plugins",
        metavar="NAME[,NAME...]",
        default="",
        help=f"plugins not to load, comma-separated (adds to ${registry.DISABLE_ENV})",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            subparsers.choices[name].set_defaults(run=module.run)
    return parser


def command_modules() -> list[ModuleType]:
    """Import and return the modules of :data:`COMMAND_MODULES`, in order."""
    return [importlib.import_module(f"automl_transfer.commands.{name}") for name in COMMAND_MODULES]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code.

    :param argv: the arguments after the program name; ``None`` reads ``sys.argv``.
    :returns: the command's exit code; 2 after an :class:`AutoMLTransferError` or a full,
        read-only or failing disk (printed as one ``error: ...`` line on stderr); 130 after
        Ctrl-C; 141 (what a shell reports for ``cat`` killed by SIGPIPE), silently, when stdout
        is a pipe whose reader has gone. Bad usage exits through argparse.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default", registry.PluginWarning)
        warnings.showwarning = _one_line_plugin_warnings(warnings.showwarning)
        try:
            registry.load_plugins(disabled=[name.strip() for name in args.disable_plugins.split(",") if name.strip()])
            return args.run(args)
        except AutoMLTransferError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_USER_ERROR
        except BrokenPipeError:
            # The reader went away (`predict ... | head -3`): stop quietly, as `cat` does. Output still
            # buffered for the closed pipe goes nowhere, so Python's exit cannot fail on it again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            print(f"error: {storage_failure(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


#: Exit code when stdout's reader went away: 128 + SIGPIPE, as a shell reports it for ``cat``.
EXIT_BROKEN_PIPE = 141
#: File-system errors that are the machine's state, not a bug: one ``error:`` line, never a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def storage_failure(error: OSError) -> str:
    """Describe a full, read-only or failing disk in one line that says what to do.

    :param error: an ``OSError`` whose ``errno`` is in :data:`STORAGE_ERRNOS`.
    :returns: the message, without the ``error:`` prefix.
    """
    where = f" ({error.filename})" if error.filename else ""
    fix = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space or raise your quota",
        errno.EROFS: "make the file system writable or choose another --run-dir",
    }.get(error.errno, "check the disk")
    return (
        f"{error.strerror or error}{where}; {fix}, then run the same command again: "
        "what was recorded before stays, and a trial cut short runs again"
    )


def _one_line_plugin_warnings(show_other):
    """Wrap ``warnings.showwarning`` so a :class:`~automl_transfer.registry.PluginWarning` prints as one line."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, registry.PluginWarning):
            print(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show
