"""``automl-transfer repair``: make a run dir damaged by a crash, a full disk or a bad edit usable again."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``repair`` subcommand."""
    parser = subparsers.add_parser(
        "repair",
        help="repair a run dir's study.journal and best/ after a crash, a full disk or a bad edit",
        description=(
            "Move the journal's bad lines and torn last record into study.journal.bad-<time> beside it, keeping "
            "every whole record (also one glued onto a torn record). Then, when best/ is damaged or missing, move "
            "it to best.damaged-<time> and retrain the study's best trial with its parameters and seed into a new "
            "best/. Stop every process of the search first."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory")
    parser.add_argument("--device", default="auto", help="where to retrain a lost best model (default auto)")


def run(args: argparse.Namespace) -> int:
    """Repair the run dir's journal and best model, printing what was done.

    :returns: 0.
    :raises AutoMLTransferError: no search in the run dir, a file that cannot be written, or a
        best model that cannot be retrained (its data or source changed).
    """
    import optuna

    from automl_transfer.errors import RunDirError, StorageError
    from automl_transfer.search.join import join_search
    from automl_transfer.search.rebuild import best_problem, rebuild_best
    from automl_transfer.search.record import recorded_identity
    from automl_transfer.storage.backends import open_run_storage, pick_study
    from automl_transfer.storage.journal import quarantine_bad_lines
    from automl_transfer.storage.run_dir import JOURNAL_NAME

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = args.run_dir.absolute()
    journal = run_dir / JOURNAL_NAME
    if not journal.is_file():
        raise RunDirError(f"{args.run_dir} holds no search (no {JOURNAL_NAME}): give the run dir of a search")
    try:
        done = quarantine_bad_lines(journal)
    except OSError as error:
        raise StorageError(f"cannot repair {journal}: {error.strerror or error}; check its permissions and free space")
    storage = open_run_storage(run_dir)
    study = optuna.load_study(study_name=pick_study(storage, None, run_dir), storage=storage)
    problem = best_problem(study, run_dir) if recorded_identity(study) else None  # only a search has a best/
    if problem is not None:
        print(f"best model: {problem}", flush=True)
        search, joined = join_search(run_dir=run_dir, device=args.device, quiet=True, follow_cwd=True)
        done.append(rebuild_best(search, joined))
    for line in done:
        print(line)
    if not done:
        print(f"{run_dir} is whole: nothing to repair")
    return 0
