"""Selection regret: does the search keep its best trial when the validation split is a few dozen images?

A search of the ``lite`` preset's kind (ImageNet EfficientNet-Lite0 and the same architecture
from random weights, 64 px, the default start points, then the sampler) on few-shot tasks that
ship offline: ``photos``, ``photos, other half`` and ``digits``, 10 labelled images per class,
scored on held-out test images that nothing selects on. After the search, every complete trial's
configuration is refit the way the search refits its winner (train + validation, the epochs its
trial found best, its own seed) and scored on the test images. Per task and seed:

- the test accuracy of the model the search kept, and of the best trial (an oracle: the
  largest test accuracy among the refit trials);
- selection regret: the oracle minus the kept model's accuracy;
- whether the kept model starts from random weights, and how far it falls below the best
  trial from ImageNet weights;
- the same with ``--cross-check 2 --folds 3``: the same search run again, which scores its two
  best trials by 3-fold cross-validation on every labelled image and keeps the better mean
  (6 more fits on two thirds of the images, against the search's trials).

Each finished search is appended to a JSONL file (``--runs``), so an interrupted benchmark
resumes where it stopped and the table always covers every search recorded.

Run (about an hour on 2 quiet CPU cores)::

    python bench/selection_regret.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
from pathlib import Path

import optuna
import torch
from common import publish, real_tasks, section_preamble, table

from automl_transfer import TransferSearch
from automl_transfer.search.refit import all_labelled, retrain
from automl_transfer.training.evaluation import evaluate
from automl_transfer.training.params import TrialParams

SPACE = (
    "source: [lite:lite0, lite:lite0@none]\nimage_size: 64\nepochs: {epochs}\nbatch_size: 32\nmin_steps: 0\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny task, one seed, 2 trials of 1 epoch")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task (default 3)")
    parser.add_argument("--trials", type=int, default=6, help="trials per search (default 6)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10)")
    parser.add_argument("--runs", type=Path, default=Path(".cache/bench/selection_regret.jsonl"),
                        help="JSONL of finished searches, read to resume (default .cache/bench/selection_regret.jsonl)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs = 1, 2, 1
        args.runs = args.runs.with_name("selection_regret-quick.jsonl")
        args.runs.unlink(missing_ok=True)  # a quick run proves the script works: it starts afresh
    return args


def refit_and_test(search: TransferSearch, trial, seed: int) -> float:
    """Refit one complete trial's configuration as the search refits its winner; its test accuracy.

    The backbone comes from the search's own cache, as in the search's refit: a first build draws
    random numbers (timm initialises, then loads the weights) and a cached copy does not, so the
    same seed gives another head with the other.
    """
    params = TrialParams.from_dict(trial.user_attrs["params"])
    data = search.prepare(params.image_size, params.interpolation)
    trained = retrain(search.runner.context, trial, all_labelled(data), seed)
    return evaluate(trained.model, data.test, torch.device("cpu"), 512)["accuracy"]


def one_search(dataset: str, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Search, then refit and test every complete trial; the kept model's and the oracle's accuracies."""
    space = folder / "space.yaml"
    space.write_text(SPACE.format(epochs=args.epochs))
    search = TransferSearch(dataset=dataset, space=str(space), trials=args.trials, run_dir=folder / "run",
                            device="cpu", seed=seed, quiet=True, force_new=True)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = search.run()
    study = optuna.load_study(study_name=None, storage=search.storage)  # the run dir holds this one study
    tested = {trial.number: (trial.params["source"], refit_and_test(search, trial, seed))
              for trial in study.trials if trial.state.name == "COMPLETE"}
    kept = summary["best_trial"]
    checked = TransferSearch(dataset=dataset, space=str(space), trials=args.trials, run_dir=folder / "run",
                             device="cpu", seed=seed, quiet=True, cross_check=2, folds=3)
    with contextlib.redirect_stdout(io.StringIO()):
        kept_checked = checked.run()["best_trial"]
    pretrained = [accuracy for source, accuracy in tested.values() if not source.endswith("@none")]
    return {
        "kept": tested[kept][1],
        "kept_random": tested[kept][0].endswith("@none"),
        "kept_checked": tested[kept_checked][1],
        "checked_random": tested[kept_checked][0].endswith("@none"),
        "oracle": max(accuracy for _, accuracy in tested.values()),
        "best_pretrained": max(pretrained, default=float("nan")),
        "reported": summary["test"]["accuracy"],
    }


def spread(values: list[float]) -> str:
    """Median (range) of accuracies, three decimals."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str] | None = None) -> None:
    """Run every task and seed; print and record the results table."""
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tasks = real_tasks(args.quick)
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    recorded = [json.loads(line) for line in args.runs.read_text().splitlines()] if args.runs.is_file() else []
    done = {(record["task"], record["seed"], record["trials"], record["epochs"]): record for record in recorded}
    rows, regrets, checked_regrets = [], [], []
    for task, dataset in tasks.items():
        results = []
        for seed in range(args.seeds):
            key = (task, seed, args.trials, args.epochs)
            if key not in done:
                with tempfile.TemporaryDirectory() as folder:
                    result = one_search(dataset.format(seed=seed), seed, args, Path(folder))
                done[key] = {"task": task, "seed": seed, "trials": args.trials, "epochs": args.epochs, **result}
                with args.runs.open("a") as log:
                    log.write(json.dumps(done[key]) + "\n")
                print(f"{task} seed {seed}: {result}", flush=True)
            results.append(done[key])
        for name, kept, random_init, total in (("validation score", "kept", "kept_random", regrets),
                                               ("cross-check 2 x 3 folds", "kept_checked", "checked_random",
                                                checked_regrets)):
            task_regrets = [100 * (result["oracle"] - result[kept]) for result in results]
            total += task_regrets
            rows.append([
                task, name, spread([result[kept] for result in results]),
                spread([result["oracle"] for result in results]),
                f"{statistics.median(task_regrets):.1f} ({', '.join(f'{value:.1f}' for value in task_regrets)})",
                f"{sum(result[random_init] for result in results)} of {len(results)}",
                ", ".join(f"{100 * (result['best_pretrained'] - result[kept]):+.1f}" for result in results),
            ])
    markdown = "\n".join([
        section_preamble("Selection regret on real pretrained sources (bench/selection_regret.py)", torch.device("cpu")),
        f"A search over `lite:lite0` and `lite:lite0@none` ({args.trials} trials, {args.epochs} epochs, 64 px, "
        "batch 32, `min_steps: 0`, everything else at its default), 10 labelled images per class, 20% of them "
        f"held out for validation, {args.seeds} seed(s). Every complete trial is refit as the search refits its "
        "winner and scored on test images nothing selects on. Regret: the best trial's test accuracy minus the "
        "kept model's, in points.",
        "",
        table(["task", "selection", "kept model", "best trial", "regret (per seed)", "kept random init",
               "best ImageNet trial minus kept (per seed)"], rows),
        "",
        f"Median regret over every task and seed: {statistics.median(regrets):.1f} points by the validation "
        f"score, {statistics.median(checked_regrets):.1f} with the cross-check (goal: <= 1).",
    ])
    publish("selection-regret", markdown, args.quick, args.results)


if __name__ == "__main__":
    main()
