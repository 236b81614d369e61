"""``automl-transfer repair``: make a run dir damaged by a crash or a bad edit usable again."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``repair`` subcommand."""
    parser = subparsers.add_parser(
        "repair",
        help="repair a run dir's study.journal after a crash or a bad edit",
        description=(
            "Move the journal's bad lines and torn last record into study.journal.bad-<time> beside it, keeping "
            "every whole record (also one glued onto a torn record). Stop every process of the search first."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory")


def run(args: argparse.Namespace) -> int:
    """Repair the run dir's journal and print what was done.

    :returns: 0.
    :raises AutoMLTransferError: no search in the run dir, or a file that cannot be written.
    """
    from automl_transfer.errors import RunDirError, StorageError
    from automl_transfer.storage.journal import quarantine_bad_lines
    from automl_transfer.storage.run_dir import JOURNAL_NAME

    journal = args.run_dir / JOURNAL_NAME
    if not journal.is_file():
        raise RunDirError(f"{args.run_dir} holds no search (no {JOURNAL_NAME}): give the run dir of a search")
    try:
        done = quarantine_bad_lines(journal)
    except OSError as error:
        raise StorageError(f"cannot repair {journal}: {error.strerror or error}; check its permissions and free space")
    for line in done:
        print(line)
    if not done:
        print(f"{journal} is whole: nothing to repair")
    return 0
