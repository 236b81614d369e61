"""``automl-transfer search``: run (or resume) a search and print its leaderboard."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_transfer.commands.job_config import merge_job, read_job_file
from automl_transfer.errors import EXIT_INTERRUPTED, AutoMLTransferError
from automl_transfer.search.config import METRICS, PRUNERS, SAMPLERS, SearchConfig

if TYPE_CHECKING:
    from automl_transfer.data.ahead import DecodingAhead
    from automl_transfer.search.search import TransferSearch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``search`` subcommand and its flags."""
    parser = subparsers.add_parser(
        "search",
        help="search for the best way to transfer a pretrained model to a dataset",
        description="Run an Optuna search; running the same command again resumes it.",
    )
    add_search_flags(parser)


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags shared by ``search`` and the job file (every flag defaults to ``None``)."""
    parser.add_argument("--dataset", help="PLUGIN[:LOCATION], e.g. imagefolder:data/pets, csv:labels.csv, digits")
    parser.add_argument("--space", help="search-space preset (small, default, demo) or YAML path")
    parser.add_argument("--trials", type=int, help="trials the study should hold when done (default 20)")
    parser.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    parser.add_argument("--run-dir", type=Path, help="run directory (default runs/<study>)")
    parser.add_argument("--study", help="Optuna study name (default: from dataset and space)")
    parser.add_argument("--storage", help="RDB storage URL for multi-machine searches (default: journal in run dir)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--seed", type=int, help="seed for sampler and training, and for the validation split of a new search (default 0)"
    )
    parser.add_argument("--metric", choices=tuple(METRICS), help="objective (default accuracy)")
    parser.add_argument("--pruner", choices=PRUNERS, help="pruner (default hyperband)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="sampler (default tpe)")
    parser.add_argument("--val-fraction", type=float, help="validation share when the dataset has no split (0.2)")
    parser.add_argument("--skip-bad-images", action="store_true", default=None, help="skip and count unreadable images")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model on CUDA")
    parser.add_argument("--force-new", action="store_true", default=None, help="replace a different study in the run dir")
    parser.add_argument(
        "--quiet", action="store_true", default=None,
        help="no plan, trial or epoch lines and no leaderboard (`report` shows it)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes running trials in parallel (default 1; 0: only record the search for "
        "`automl-transfer worker` processes started elsewhere)",
    )
    parser.add_argument(
        "--devices", help="the workers' devices, comma-separated, given out round-robin (e.g. cuda:0,cuda:1)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        help="seconds between a trial's heartbeats in an RDB --storage; silent for 3 of them = lost (default 30)",
    )
    parser.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the trials, train the winner again on training + validation images and keep that as best/ "
        "(default); --no-refit keeps the selected trial's model",
    )
    parser.add_argument(
        "--cross-check",
        type=int,
        metavar="N",
        help="before the refit, score the N best trials by stratified cross-validation on every labelled image "
        "and keep the best mean: on a small validation split one image decides (default 0: off)",
    )
    parser.add_argument("--folds", type=int, help="folds of --cross-check (default 3)")
    parser.add_argument(
        "--rank-prior",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rank the sources by transferability when the study is created and try the best first (default); "
        "--no-rank-prior keeps the space's order",
    )
    add_weights_and_test_flags(parser)
    parser.add_argument("--config", type=Path, help="job YAML whose keys are these flags' names")


def add_weights_and_test_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights``, ``--weights-dir`` (running sources offline) and ``--test`` (held-out scoring)."""
    parser.add_argument(
        "--weights",
        choices=("pretrained", "none"),
        help="none: start every source of the space from random weights, nothing downloaded "
        "(default pretrained: the weights the space names)",
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        metavar="DIR",
        help="start sources with pretrained weights from DIR/MODEL.safetensors (or MODEL.TAG.safetensors) "
        "where that file exists",
    )
    parser.add_argument(
        "--test",
        metavar="DATASET",
        help="score the final best model on this dataset's test split (or all its images) into summary.json "
        "(default: the search dataset's own test split, when it has one)",
    )


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Build a :class:`SearchConfig` from the job file (if any) overridden by the flags."""
    flags = {key: value for key, value in vars(args).items() if key in SearchConfig.__dataclass_fields__}
    job = read_job_file(args.config) if args.config else {}
    merged = merge_job(job, flags)
    if not merged.get("dataset"):
        raise AutoMLTransferError("no dataset: pass --dataset PLUGIN[:LOCATION] (e.g. --dataset digits) or set it in --config")
    return SearchConfig(**merged)


def run(args: argparse.Namespace) -> int:
    """Run the search; exit 0 when done, 130 after Ctrl-C or SIGTERM (printing how to resume).

    :raises AutoMLTransferError: bad input, or every trial failed (there is no best model).
    """
    from automl_transfer.search.ahead import decode_ahead

    config = config_from_args(args)
    ahead = decode_ahead(config)  # before torch is imported: the images are decoded on another core meanwhile
    try:
        summary, search = _search(config, ahead)
    except KeyboardInterrupt:
        print(
            "interrupted: the running trials were recorded as failed (interrupted) and will run again; "
            f"resume with:\n  automl-transfer {shlex.join(sys.argv[1:])}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if ahead is not None:
            ahead.close()
    if config.workers == 0:
        where = f"--storage URL --study {config.study}" if config.storage else f"--run-dir {config.run_dir}"
        print(f"search recorded in {config.run_dir}; run its trials with: automl-transfer worker {where}")
    elif summary["best_trial"] is None:
        _no_best_model(search, summary)
    else:
        print(f"best model: {config.run_dir / 'best'}  summary: {config.run_dir / 'summary.json'}")
    return 0


def _search(config: SearchConfig, ahead: DecodingAhead | None) -> tuple[dict[str, Any], TransferSearch]:
    """Run the search ``config`` describes; return its summary and the search."""
    import optuna

    from automl_transfer.search.search import TransferSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = TransferSearch(config, ahead=ahead)
    return search.run(), search


def _no_best_model(search: TransferSearch, summary: dict[str, Any]) -> None:
    """Say why no trial completed; an error (exit 2) when every finished trial failed.

    :raises AutoMLTransferError: every finished trial failed, naming the most common reasons.
    """
    import optuna
    from optuna.trial import TrialState

    config = search.config
    if summary["n_failed"] == 0 or summary["n_complete"] + summary["n_pruned"] > 0:
        print(f"no trial has completed yet, so there is no best model; run the same command to go on ({config.run_dir})")
        return
    study = optuna.load_study(study_name=config.study, storage=search.storage)
    reasons = Counter(t.user_attrs.get("fail_reason", "unknown") for t in study.get_trials(states=(TrialState.FAIL,)))
    shown = "; ".join(f"{count}x {reason}" for reason, count in reasons.most_common(2))
    raise AutoMLTransferError(
        f"every trial failed ({shown}), so there is no best model in {config.run_dir}; fix the cause, then start "
        f"over with --force-new (`automl-transfer report {config.run_dir}` lists each trial's reason)"
    )
