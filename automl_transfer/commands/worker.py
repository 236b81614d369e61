"""``automl-transfer worker``: join a running search and work through its trials.

Start one per GPU, on this machine or another: the dataset, space and settings come from the
study that ``automl-transfer search`` recorded. With a PostgreSQL ``--storage`` the workers
may run on many machines; the run dir (for ``best/`` and the claim lock) must then be on a
file system they all share.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from automl_transfer.errors import EXIT_INTERRUPTED
from automl_transfer.search.workers import STORAGE_ENV


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``worker`` subcommand and its flags."""
    parser = subparsers.add_parser(
        "worker",
        help="join a search started with `automl-transfer search` and run some of its trials",
        description="Run trials of an existing search until the requested count is met.",
    )
    parser.add_argument("--run-dir", type=Path, help="the search's run directory")
    parser.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV),
        help=f"the search's RDB storage URL (default ${STORAGE_ENV}); the run dir defaults to the recorded one",
    )
    parser.add_argument("--study", help="study name, when the storage holds several")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--timeout", type=float, help="claim no trial after this many seconds")
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        help="seconds between a trial's heartbeats in an RDB storage (default: the search's)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")


def run(args: argparse.Namespace) -> int:
    """Work until no trial is left; exit 0, or 130 after Ctrl-C or SIGTERM."""
    import optuna
    import torch

    from automl_transfer.search.join import work

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        work(args.run_dir, args.storage, args.study, args.device, args.quiet, args.timeout, args.heartbeat_interval,
             follow_cwd=True)
    except KeyboardInterrupt:
        print(f"worker {os.getpid()} interrupted: its trial was recorded as interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
