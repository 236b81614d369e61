"""Search efficiency: our default search against random search, at equal compute, on the demo's task.

The task is the demo's (:mod:`automl_transfer.demo`): sources pretrained on digits 0-4,
target digits 5-9 with ``--per-class`` labelled images per digit (half of them for
validation; default 20, more than the demo's 6, so that validation accuracy does not sit at
100% for many trials and leave nothing to search for), the rest held out as the test set; the
search space is the demo's (two transferred sources, the same architectures from random
weights, freeze depth, learning rate, weight decay, L2-SP).

For each seed, two searches over that same space:

``random``
    ``sampler="random", pruner="none"``: ``--trials`` trials, every one trained for all its
    epochs. Its total epochs are the compute budget.
``ours``
    the default, ``sampler="tpe", pruner="hyperband"``, run for ``--ours-factor`` times as
    many trials and cut at the budget (trials are sequential, so the cut is exactly what a
    search stopped at that point would have done).

Compute is counted in epochs trained, from each trial's reported epochs (pruned and failed
trials included). Whenever a search saves a new best model (chosen by validation accuracy,
as always), an observer plugin scores it on the held-out test set, so each search yields
"best model's test accuracy vs epochs trained". Goal: ours reaches random search's final
test accuracy with at most half of the budget.

Run (10 to 15 minutes on 2 CPU cores)::

    python bench/search_efficiency.py
    python bench/search_efficiency.py --quick     # < 1 minute: proves the script works
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from common import median, publish, section_preamble, table
from optuna.trial import TrialState
from rich.console import Console

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.demo.demo import (
    SOURCE_ARCHITECTURES,
    SPACE_FILE,
    source_checkpoint,
    target_dataset,
    write_space,
)
from automl_transfer.demo.settings import DemoSettings
from automl_transfer.inference.predictor import load_model
from automl_transfer.plugin import hookimpl
from automl_transfer.registry import load_plugins, register_plugin, unregister_plugin
from automl_transfer.search.config import METRICS, SearchConfig
from automl_transfer.search.search import TransferSearch
from automl_transfer.storage.checkpoint import read_best_info
from automl_transfer.training.devices import resolve_device
from automl_transfer.training.evaluation import evaluate

METHODS = {"random": {"sampler": "random", "pruner": "none"}, "ours": {"sampler": "tpe", "pruner": "hyperband"}}
#: Shares of the budget at which the table reports each method's test accuracy.
CHECKPOINTS = (0.1, 0.25, 0.5, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed: proves the script works in < 1 minute")
    parser.add_argument("--trials", type=int, help="random-search trials: sets the budget (default 16)")
    parser.add_argument(
        "--ours-factor", type=float, help="ours runs this many times --trials, cut at the budget (default 3)"
    )
    parser.add_argument("--seeds", type=int, help="searches per method, seeds 0..N-1 (default 6)")
    parser.add_argument("--epochs", type=int, help="epochs of a full trial (default 20)")
    parser.add_argument("--per-class", type=int, default=20, help="labelled images per target digit (default 20)")
    parser.add_argument(
        "--metric", default="accuracy", choices=tuple(METRICS), help="the searches' objective (default accuracy)"
    )
    parser.add_argument("--source-epochs", type=int, help="epochs of source pretraining (default 30, the demo's)")
    parser.add_argument("--cache-dir", type=Path, help="source checkpoints (default .cache/demo, shared with the demo)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: batches of 5 images gain nothing from more)"
    )
    parser.add_argument(
        "--results", type=Path, help="results file to update (default bench/RESULTS.md; not written by --quick)"
    )
    args = parser.parse_args(argv)
    defaults = {"trials": 3, "ours_factor": 2.0, "seeds": 1, "epochs": 3, "source_epochs": 1} if args.quick else {
        "trials": 16, "ours_factor": 3.0, "seeds": 6, "epochs": 20, "source_epochs": 30}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


class TestScorer:
    """An observer plugin: scores each new best model of a search on the held-out test set.

    :param search: the search being observed (its decoded test split is reused).
    """

    def __init__(self, search: TransferSearch):
        self.search = search
        self.test_accuracy: dict[int, float] = {}

    @hookimpl
    def trial_end(self, trial, state, value, reason):
        """When ``trial`` became the run's best model, record its test accuracy by trial number."""
        if state != TrialState.COMPLETE:
            return
        info = read_best_info(self.search.config.run_dir)
        if info is None or info["trial"] != trial.number:
            return
        loaded = load_model(self.search.config.run_dir, device=self.search.device)
        test = self.search.prepare(loaded.image_size, loaded.interpolation).test
        self.test_accuracy[trial.number] = evaluate(loaded.model, test, self.search.device, batch_size=256)["accuracy"]


@dataclass
class Curve:
    """One search's best test accuracy as epochs accumulate.

    :param points: ``(epochs trained so far, test accuracy of the best model so far)`` after
        each trial, in trial order; the accuracy is ``nan`` before the first complete trial.
    """

    points: list[tuple[int, float]]

    def accuracy_at(self, epochs: float) -> float:
        """The best model's test accuracy once ``epochs`` epochs were spent (``nan`` before any)."""
        reached = [accuracy for spent, accuracy in self.points if spent <= epochs]
        return reached[-1] if reached else math.nan

    def epochs_to_reach(self, accuracy: float, budget: int) -> float:
        """Epochs spent when the best test accuracy first reached ``accuracy`` within ``budget`` (``inf`` if never)."""
        for spent, reached in self.points:
            if spent > budget:
                break
            if reached >= accuracy:
                return spent
        return math.inf


def run_search(method: str, seed: int, trials: int, space: Path, settings: DemoSettings, workdir: Path,
               args: argparse.Namespace) -> Curve:
    """Run one search and return its curve."""
    config = SearchConfig(
        dataset=target_dataset(settings),
        space=str(space),
        trials=trials,
        run_dir=workdir / f"{method}-{seed}",
        device=args.device,
        seed=seed,
        metric=args.metric,
        val_fraction=0.5,
        quiet=True,
        **METHODS[method],
    )
    search = TransferSearch(config)
    scorer = TestScorer(search)
    register_plugin(scorer, "bench-test-scorer")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the leaderboard
            search.run()
    finally:
        unregister_plugin("bench-test-scorer")
    study = optuna.load_study(study_name=config.study, storage=search.storage)
    points, spent, best = [], 0, math.nan
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number):
        spent += len(trial.intermediate_values)
        best = scorer.test_accuracy.get(trial.number, best)
        points.append((spent, best))
    return Curve(points)


def main(argv: list[str] | None = None) -> int:
    """Run every search, print the comparison and update the results file."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_plugins()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(stderr=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as temporary:
        workdir = Path(temporary)
        cache_dir = args.cache_dir or (workdir / "sources" if args.quick else Path(".cache/demo"))
        settings = DemoSettings(cache_dir=cache_dir, source_epochs=args.source_epochs, target_epochs=args.epochs,
                                per_class=args.per_class, device=args.device)
        checkpoints = {name: source_checkpoint(name, settings, console) for name in SOURCE_ARCHITECTURES}
        sources = [f"timm:{name}@{path.resolve()}" for name, path in checkpoints.items()]
        sources += [f"timm:{name}@{NO_WEIGHTS}" for name in checkpoints]
        space = write_space(workdir / SPACE_FILE, sources, settings)
        rows, fractions, finals = [], [], {"random": [], "ours": []}
        at_checkpoints = {method: {share: [] for share in CHECKPOINTS} for method in METHODS}
        for seed in range(args.seeds):
            random_curve = run_search("random", seed, args.trials, space, settings, workdir, args)
            budget = random_curve.points[-1][0]
            ours_trials = math.ceil(args.trials * args.ours_factor)
            ours_curve = run_search("ours", seed, ours_trials, space, settings, workdir, args)
            target = random_curve.accuracy_at(budget)
            needed = ours_curve.epochs_to_reach(target, budget)
            fractions.append(needed / budget)
            for method, curve in (("random", random_curve), ("ours", ours_curve)):
                finals[method].append(curve.accuracy_at(budget))
                for share in CHECKPOINTS:
                    at_checkpoints[method][share].append(curve.accuracy_at(share * budget))
            trials_in_budget = sum(1 for spent, _ in ours_curve.points if spent <= budget)
            rows.append([
                str(seed),
                str(budget),
                f"{target:.3f}",
                f"{ours_curve.accuracy_at(budget):.3f}",
                f"{trials_in_budget}",
                "never" if math.isinf(needed) else f"{needed:.0f} ({needed / budget:.0%})",
            ])
            console.print(f"seed {seed}: {rows[-1]} ({time.monotonic() - started:.0f} s)", highlight=False)
    median_fraction = median(fractions)
    verdict = "met" if median_fraction <= 0.5 else "not met"
    curve_rows = [
        [method] + [f"{median(values):.3f}" for values in at_checkpoints[method].values()] for method in METHODS
    ]
    body = (
        section_preamble("Search efficiency: TPE + Hyperband vs random search (bench/search_efficiency.py)", device)
        + f"- task: the demo's: target `{target_dataset(settings)}` (half of the labelled images for "
        f"validation, objective validation {args.metric}), sources {', '.join(SOURCE_ARCHITECTURES)} pretrained on digits 0-4 for {args.source_epochs} "
        f"epochs and from random weights; space: the demo's, {args.epochs} epochs per full trial\n"
        f"- budget: random search's epochs ({args.trials} trials, no pruning); ours: TPE + Hyperband, "
        f"up to {math.ceil(args.trials * args.ours_factor)} trials cut at the budget; {args.seeds} seeds; "
        f"test accuracy of the best-by-validation model; wall time {time.monotonic() - started:.0f} s\n"
        "- note: one seed drives both searches of a row, so TPE's first 10 (random start-up) trials are the same "
        "draws as random search's first 10; there the difference is Hyperband stopping poor trials early\n"
        f"- result: ours reached random search's final test accuracy in {sum(map(math.isfinite, fractions))} of "
        f"{len(fractions)} seeds; median share of the budget it needed (never = infinite): **{median_fraction:.0%}** "
        f"(goal <= 50%: {verdict}); final test accuracy, median: ours {median(finals['ours']):.3f}, "
        f"random {median(finals['random']):.3f}\n\n"
        + table(["seed", "budget (epochs)", "random final test acc", "ours test acc at budget", "ours trials in budget",
                 "ours epochs to reach random's final"], rows)
        + "\n\nMedian test accuracy of the best model so far, by share of the budget spent:\n\n"
        + table(["method"] + [f"{share:.0%} of budget" for share in CHECKPOINTS], curve_rows)
        + "\n"
    )
    publish("search-efficiency", body, args.quick, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
