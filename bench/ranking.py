"""Ranking sources: do LogME and kNN predict which source fine-tunes best, and does the prior help?

Two few-shot tasks from scikit-learn's digits (targets 5-9 and the odd digits, 5 labels per
class, the rest held out). Each gets six sources trained by the benchmark on other images,
related and not (timm test models on the task's source digits for 30 or 3 epochs, on two of
them, on generated stripes), plus random weights. For every source and seed:

- the estimators' scores on the target's training images (``automl_transfer.ranking``) and
  their cost, features included;
- the best fine-tuned test accuracy: each of the search's default start points (a full
  fine-tune and a half-frozen one, lr 3e-3) trained on every labelled image, the better of
  the two on the held-out images (an oracle choice: the truth the estimators should predict,
  free of a 5-image validation split's noise).

Kendall's tau between each estimator and the fine-tuned accuracy over the pretrained sources
(random weights have no score and rank last), per seed and on the means over seeds; goal
(issue 10): tau >= 0.6 at <= 1/50 of one fine-tuning fit's cost. Then the prior: a search over
all sources with the ranking on and off (same budget, same seeds): the trial at which each
found its final best model and that model's test accuracy.

``--real``: the same taus and costs with real pretrained sources (no prior searches): ImageNet
EfficientNet-Lite0, -Lite1 and -Lite2 (``lite:liteN``); the same three fine-tuned on an
unrelated task first (generated stripes, 5 epochs, the ImageNet features partly overwritten); a
``test_resnet`` trained on all ten digits; and ``lite:lite0@none``. Targets at 64 px, 10 labels
per class: ``photos``, ``photos`` other half and ``digits``, each fine-tuned with the ``lite``
preset's settings (10 epochs, batch 16, ``min_steps: 0``).

Run (about 40 minutes on one quiet CPU core; ``--real`` about an hour)::

    python bench/ranking.py
    python bench/ranking.py --real
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import publish, real_tasks, section_preamble, table
from scipy.stats import kendalltau

from automl_transfer import TransferSearch, load_model
from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import prepare_data
from automl_transfer.model.sources import build_backbone
from automl_transfer.ranking.rank import estimate, source_features
from automl_transfer.registry import load_plugins
from automl_transfer.search.refit import all_labelled
from automl_transfer.contract.trial_settings import DEFAULT_START_POINTS
from automl_transfer.training.evaluation import evaluate
from automl_transfer.training.params import TrialParams
from automl_transfer.training.trial import run_trial

#: task -> (source digits, target digits, two of the source digits)
TASKS = {"0-4 -> 5-9": ("0-4", "5-9", "0,1"), "even -> odd": ("0,2,4,6,8", "1,3,5,7,9", "0,2")}
SHOTS = 5
#: (name, architecture, source dataset of the task's source digits or a fixed one, epochs)
SOURCES = (
    ("resnet, source digits, 30 epochs", "test_resnet", "{digits}", 30),
    ("resnet, source digits, 3 epochs", "test_resnet", "{digits}", 3),
    ("resnet, two source digits, 30 epochs", "test_resnet", "{two}", 30),
    ("efficientnet, source digits, 30 epochs", "test_efficientnet", "{digits}", 30),
    ("resnet, stripes, 10 epochs", "test_resnet", "synthetic:classes=4,per_class=100,size=32", 10),
    ("efficientnet, stripes, 10 epochs", "test_efficientnet", "synthetic:classes=4,per_class=100,size=32", 10),
)


#: ``--real`` sources: (name, source text, or (architecture, dataset to train it on, epochs) to make one).
REAL_SOURCES = (
    ("ImageNet Lite0", "lite:lite0"),
    ("ImageNet Lite1", "lite:lite1"),
    ("ImageNet Lite2", "lite:lite2"),
    ("ImageNet Lite0, then stripes", ("lite:lite0", "synthetic:classes=4,per_class=50,size=64", 5)),
    ("ImageNet Lite1, then stripes", ("lite:lite1", "synthetic:classes=4,per_class=50,size=64", 5)),
    ("ImageNet Lite2, then stripes", ("lite:lite2", "synthetic:classes=4,per_class=50,size=64", 5)),
    ("test_resnet, digits", ("timm:test_resnet@none", "digits:size=64", 10)),
)
#: How ``--real`` fine-tunes a source on a target: the ``lite`` preset's settings.
REAL_FIT = {"image_size": 64, "epochs": 10, "batch_size": 16, "min_steps": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one task, one seed, short training: proves it works")
    parser.add_argument("--real", action="store_true", help="real pretrained sources (ImageNet EfficientNet-Lite) on photos and digits")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task (default 3)")
    parser.add_argument("--trials", type=int, default=12, help="trials of the prior's searches (default 12)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"), help="source checkpoints")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials = 1, 4
    return args


def train_source(name: str, task: str, args: argparse.Namespace) -> str:
    """Train (or find cached) the source ``name`` of ``task``; return its source text."""
    _, architecture, dataset, epochs = next(source for source in SOURCES if source[0] == name)
    digits, _, two = TASKS[task]
    dataset = dataset.format(digits=f"digits:classes={digits},size=32", two=f"digits:classes={two},size=32")
    epochs = max(1, epochs // 10) if args.quick else epochs
    space = (f"source: timm:{architecture}@none\nimage_size: 32\nlr: 3.0e-3\nweight_decay: 0.05\nepochs: {epochs}\n"
             "batch_size: 64\naugment: light\nstart: []\n")
    return f"timm:{architecture}@{trained_once(f'{architecture}-{dataset}-{epochs}', space, dataset, args)}"


def trained_once(tag: str, space: str, dataset: str, args: argparse.Namespace) -> Path:
    """The weights of a one-trial search of ``space`` on ``dataset``, run once and cached under ``tag``."""
    run_dir = (args.cache_dir / "ranking" / "".join(c for c in tag if c.isalnum() or c == "-")).absolute()
    weights = run_dir / "best" / "model.safetensors"
    if not weights.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "space.yaml").write_text(space)
        quietly(TransferSearch, dataset=dataset, space=str(run_dir / "space.yaml"), trials=1, run_dir=run_dir,
                device="cpu", force_new=True, refit=False)
    return weights


def train_real_source(name: str, args: argparse.Namespace) -> str:
    """Make (or find cached) the ``--real`` source ``name``; return its source text."""
    made = dict(REAL_SOURCES)[name]
    if isinstance(made, str):
        return made
    source, dataset, epochs = made
    epochs = 1 if args.quick else epochs
    space = (f"source: {source}\nimage_size: 64\nlr: 3.0e-3\nweight_decay: 0.05\nepochs: {epochs}\nbatch_size: 32\n"
             "min_steps: 0\naugment: light\nstart: []\n")
    weights = trained_once(f"{source}-{dataset}-{epochs}", space, dataset, args)
    architecture = build_backbone(source).module.pretrained_cfg["architecture"]
    return f"timm:{architecture}@{weights}"


def quietly(make_search, **config) -> dict:
    """Run a search without its console output; return its summary."""
    with contextlib.redirect_stdout(io.StringIO()):
        return make_search(quiet=True, rank_prior=False, **config).run()


def score_source(source: str, data) -> dict:
    """The estimators' scores of ``source`` on ``data`` and what they cost (features included)."""
    start = time.perf_counter()
    backbone = build_backbone(source)
    evidence, accuracy = estimate(source_features(backbone, data, torch.device("cpu")), data)
    return {"logme": evidence, "knn": accuracy, "seconds": time.perf_counter() - start}


def fine_tune(source: str, seed: int, data, image_size: int = 32, epochs: int = 10, batch_size: int = 16,
              min_steps: int = 200) -> dict:
    """The better test accuracy of the default start points trained on every labelled image; one fit's seconds."""
    everything = all_labelled(data)
    accuracies, seconds = [], []
    for recipe in DEFAULT_START_POINTS:
        if source.endswith("@none") and recipe["freeze_depth"] > 0:
            continue  # random weights are never frozen
        params = TrialParams(
            source=source, freeze_depth=recipe["freeze_depth"], lr=recipe["lr"], weight_decay=0.05, l2sp=0.0,
            head="linear", head_params={}, epochs=epochs, batch_size=batch_size, image_size=image_size,
            interpolation="bilinear", label_smoothing=0.0, augment="light", warmup_epochs=1, min_steps=min_steps,
        )
        start = time.perf_counter()
        trained = run_trial(params, lambda size, interpolation: everything, torch.device("cpu"), lambda *_: None, seed=seed)
        seconds.append(time.perf_counter() - start)
        accuracies.append(evaluate(trained.model, data.test, torch.device("cpu"), 512)["accuracy"])
    return {"test": max(accuracies), "trial_seconds": statistics.mean(seconds)}


def prior_search(sources: list[str], target: str, seed: int, data, prior: bool, trials: int, folder: Path) -> dict:
    """A search over every source with the ranking prior on or off: its final test accuracy and when it found it."""
    space = folder / "all.yaml"
    space.write_text("source:\n" + "".join(f"  - {source}\n" for source in sources)
                     + "image_size: 32\nbatch_size: 16\nepochs: 10\nlr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"
                     "freeze_depth: {low: 0.0, high: 1.0}\n")
    run_dir = folder / f"prior-{prior}-{seed}"
    with contextlib.redirect_stdout(io.StringIO()):
        summary = TransferSearch(dataset=target, space=str(space), trials=trials, run_dir=run_dir, device="cpu",
                                 seed=seed, quiet=True, rank_prior=prior, refit=False).run()
    test = evaluate(load_model(run_dir, device="cpu").model, data.test, torch.device("cpu"), 512)["accuracy"]
    return {"best_trial": summary["best_trial"], "best_value": summary["best_value"], "test": test}


def main(argv: list[str] | None = None) -> None:
    """Score, fine-tune and search; publish the taus, costs and the prior's effect."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    load_plugins()
    if args.real:
        return real_main(args)
    tasks = list(TASKS)[:1] if args.quick else list(TASKS)
    rows, prior_rows, per_source, scores = [], [], [], []
    for task in tasks:
        sources = {name: train_source(name, task, args) for name, *_ in SOURCES}
        for seed in range(args.seeds):
            target = f"digits:classes={TASKS[task][1]},per_class={SHOTS},seed={seed},size=32"
            data = prepare_data(load_dataset(target), 32, seed=seed)
            with tempfile.TemporaryDirectory() as folder:
                results = {}
                for name, source in sources.items():
                    results[name] = {**score_source(source, data), **fine_tune(source, seed, data)}
                    per_source.append([task, str(seed), name, f"{results[name]['logme']:.4f}", f"{results[name]['knn']:.3f}", f"{results[name]['test']:.3f}"])
                    scores.append({"task": task, "seed": seed, "source": name, **results[name]})
                none = fine_tune("timm:test_resnet@none", seed, data)
                per_source.append([task, str(seed), "random weights (@none)", "-", "-", f"{none['test']:.3f}"])
                accuracy = [results[name]["test"] for name in sources]
                taus = {estimator: kendalltau([results[name][estimator] for name in sources], accuracy).statistic
                        for estimator in ("logme", "knn")}
                cost = statistics.median(results[name]["seconds"] / results[name]["trial_seconds"] for name in sources)
                rows.append({"task": task, "seed": seed, **taus, "cost": cost})
                for prior in (True, False):
                    found = prior_search([*sources.values(), "timm:test_resnet@none"], target, seed, data, prior, args.trials, Path(folder))
                    prior_rows.append({"task": task, "seed": seed, "prior": prior, **found})
            print(json.dumps(rows[-1]), flush=True)
    publish("ranking", report(rows, prior_rows, per_source, mean_taus(scores), args), args.quick, args.results)


def real_main(args: argparse.Namespace) -> None:
    """``--real``: score and fine-tune every real source on every target and seed; publish the taus and costs.

    Each source's result is appended to ``CACHE_DIR/ranking-real.jsonl`` as it is found, so an
    interrupted run resumes where it stopped.
    """
    targets = real_tasks(args.quick)
    sources = {name: train_real_source(name, args) for name, _ in REAL_SOURCES}
    fit = {**REAL_FIT, "epochs": 1} if args.quick else REAL_FIT
    log_path = args.cache_dir / f"ranking-real{'-quick' if args.quick else ''}.jsonl"
    if args.quick:
        log_path.unlink(missing_ok=True)  # a quick run proves the script works: it starts afresh
    recorded = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    found = {(entry["task"], entry["seed"], entry["source"]): entry for entry in recorded}
    rows, per_source, scores = [], [], []
    for task, dataset in targets.items():
        for seed in range(args.seeds):
            data = prepare_data(load_dataset(dataset.format(seed=seed)), fit["image_size"], seed=seed)
            results = {}
            for name, source in [*sources.items(), ("random weights (lite:lite0@none)", "lite:lite0@none")]:
                if (task, seed, name) not in found:
                    scored = score_source(source, data) if not source.endswith("@none") else {}
                    found[task, seed, name] = {"task": task, "seed": seed, "source": name, **scored,
                                               **fine_tune(source, seed, data, **fit)}
                    with log_path.open("a") as log:
                        log.write(json.dumps(found[task, seed, name]) + "\n")
                results[name] = found[task, seed, name]
                print(json.dumps(results[name]), flush=True)
            none = results.pop("random weights (lite:lite0@none)")
            for name, result in results.items():
                per_source.append([task, str(seed), name, f"{result['logme']:.4f}", f"{result['knn']:.3f}", f"{result['test']:.3f}"])
                scores.append(result)
            per_source.append([task, str(seed), none["source"], "-", "-", f"{none['test']:.3f}"])
            accuracy = [results[name]["test"] for name in sources]
            taus = {estimator: kendalltau([results[name][estimator] for name in sources], accuracy).statistic
                    for estimator in ("logme", "knn")}
            cost = statistics.median(results[name]["seconds"] / results[name]["trial_seconds"] for name in sources)
            rows.append({"task": task, "seed": seed, **taus, "cost": cost})
    publish("ranking-real", report_real(rows, per_source, mean_taus(scores), args), args.quick, args.results)


def report_real(rows: list[dict], per_source: list[list[str]], seed_means: dict, args: argparse.Namespace) -> str:
    """The ``--real`` Markdown section: taus and costs against the goal, then every source's scores."""
    tau_rows = [[row["task"], str(row["seed"]), f"{row['logme']:.2f}", f"{row['knn']:.2f}", f"1/{1 / row['cost']:.0f}"] for row in rows]
    median_tau = {estimator: statistics.median(row[estimator] for row in rows) for estimator in ("logme", "knn")}
    cost = statistics.median(row["cost"] for row in rows)
    targets = real_tasks(args.quick)
    return (
        section_preamble("Ranking real pretrained sources: estimators vs fine-tuned accuracy (bench/ranking.py --real)", None)
        + f"- targets: {', '.join(targets)}, 64 px, 10 labels per class, {args.seeds} seeds; {len(REAL_SOURCES)} "
        "pretrained sources: " + ", ".join(name for name, _ in REAL_SOURCES) + "; plus random weights (no score, "
        "ranked last); each fine-tuned with both default start points (the lite preset's 10 epochs, batch 16, "
        "`min_steps: 0`) on every labelled image, the better test accuracy kept\n"
        f"- result: median Kendall tau vs the best fine-tuned test accuracy: LogME **{median_tau['logme']:.2f}**, "
        f"kNN **{median_tau['knn']:.2f}** (goal >= 0.6); on the means over seeds: "
        + ", ".join(f"{task}: LogME {tau['logme']:.2f}, kNN {tau['knn']:.2f}" for task, tau in seed_means.items())
        + f"; cost **1/{1 / cost:.0f}** of one fine-tuning fit (goal <= 1/50), features included\n\n"
        + table(["task", "seed", "tau LogME", "tau kNN", "cost vs one trial"], tau_rows)
        + "\n\n"
        + table(["task", "seed", "source", "LogME", "kNN", "fine-tuned test"], per_source)
    )


def mean_taus(scores: list[dict]) -> dict[str, dict[str, float]]:
    """Per task, Kendall's tau of each estimator's mean score over seeds against the mean fine-tuned accuracy."""
    taus = {}
    for task in dict.fromkeys(score["task"] for score in scores):
        names = list(dict.fromkeys(score["source"] for score in scores if score["task"] == task))
        mean = {key: [statistics.mean(s[key] for s in scores if s["task"] == task and s["source"] == name) for name in names]
                for key in ("logme", "knn", "test")}
        taus[task] = {estimator: kendalltau(mean[estimator], mean["test"]).statistic for estimator in ("logme", "knn")}
    return taus


def report(rows: list[dict], prior_rows: list[dict], per_source: list[list[str]], seed_means: dict, args: argparse.Namespace) -> str:
    """The Markdown section."""
    tau_rows = [[row["task"], str(row["seed"]), f"{row['logme']:.2f}", f"{row['knn']:.2f}", f"1/{1 / row['cost']:.0f}"] for row in rows]
    median_tau = {estimator: statistics.median(row[estimator] for row in rows) for estimator in ("logme", "knn")}
    cost = statistics.median(row["cost"] for row in rows)
    found = {prior: [row for row in prior_rows if row["prior"] is prior] for prior in (True, False)}
    prior_table = [
        [row_on["task"], str(row_on["seed"]), str(row_on["best_trial"]), str(row_off["best_trial"]),
         f"{row_on['best_value']:.3f}", f"{row_off['best_value']:.3f}", f"{row_on['test']:.3f}", f"{row_off['test']:.3f}"]
        for row_on, row_off in zip(found[True], found[False])
    ]
    return (
        section_preamble("Ranking sources: estimators vs fine-tuned accuracy, and the prior (bench/ranking.py)", None)
        + f"- tasks: digits {', '.join(TASKS)}, {SHOTS} labels per class, {args.seeds} seeds; {len(SOURCES)} pretrained "
        "sources each (related and unrelated source data, longer and shorter training) plus random weights\n"
        f"- result: median Kendall tau vs the best fine-tuned test accuracy: LogME **{median_tau['logme']:.2f}**, "
        f"kNN **{median_tau['knn']:.2f}** (goal >= 0.6); on the means over seeds: "
        + ", ".join(f"{task}: LogME {tau['logme']:.2f}, kNN {tau['knn']:.2f}" for task, tau in seed_means.items())
        + f"; cost **1/{1 / cost:.0f}** of one fine-tuning fit (goal <= 1/50), features included\n"
        f"- prior: the trial that found the final best model, median over runs: on "
        f"{statistics.median(row['best_trial'] for row in found[True]):.1f}, off "
        f"{statistics.median(row['best_trial'] for row in found[False]):.1f} ({args.trials} trials each); "
        f"test accuracy of that model, median: on {statistics.median(row['test'] for row in found[True]):.3f}, "
        f"off {statistics.median(row['test'] for row in found[False]):.3f}\n\n"
        + table(["task", "seed", "tau LogME", "tau kNN", "cost vs one trial"], tau_rows)
        + "\n\n"
        + table(["task", "seed", "best trial, prior on", "best trial, prior off", "best val, on", "best val, off",
                 "test, on", "test, off"], prior_table)
        + "\n\n"
        + table(["task", "seed", "source", "LogME", "kNN", "fine-tuned test"], per_source)
    )


if __name__ == "__main__":
    main()
