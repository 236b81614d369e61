"""Search quality: does the default search beat the 20-line script a user would write instead?

Few-shot transfer tasks built from scikit-learn's bundled handwritten digits (32 px): a source
model (timm ``test_resnet``) is trained on some digits, and the target is other digits with
5, 10 or 20 labelled images each; every other image of the target digits is the held-out test
set, which no method ever sees before its final model is scored. Tasks: digits 0-4 -> 5-9,
even -> odd, 5-9 -> 0-4, each at 5, 10 and 20 labels per class; five seeds each (the seed
picks the labelled images, the split and the search's sampling).

Rows (bench/quality_methods.py): the hand-written loop (AdamW 3e-3, OneCycle, batch 64, 10
epochs, every labelled image, from the checkpoint), and the same loop given as many training
images as our search uses (its epochs scaled up); our default search with a fixed budget of
trials over the checkpoint and random weights, freeze depth, lr and regularisation; random
search without pruning or start points, same budget (same trainer, so it measures the search
strategy); ours with a third of the trials; and ours with each mechanism of issue 8 switched
off. Ablations run on one shot count per task (task 0-4 -> 5-9 at 5, even -> odd at 10,
5-9 -> 0-4 at 20) to bound the compute. Columns: median and range of test accuracy, the
training images processed (compute) and wall seconds.

``--real``: the same comparison on real pretrained sources (bench/real_quality_methods.py):
our search over the ``lite`` preset (ImageNet EfficientNet-Lite0/1/2, 64 px, a fixed budget of
trials), random search over it at the same budget, and the fine-tune a user writes by hand on
ImageNet Lite0 (AdamW 1e-3, cosine, 15 epochs; and again at as many training images as our
search used on the same task and seed), plus variants of our search that each change one
default. Tasks ship offline: ``photos`` (crops of ten photographs, disjoint cells), ``photos,
other half`` (train on each photograph's left half, test on its right half) and ``digits``
(upscaled to 64 px), at 5, 10 and 20 labelled images per class; three seeds; the variants run
at 10. ``--shots`` and ``--methods`` run part of the grid.

Runs are written to a JSONL file as they finish, so an interrupted benchmark resumes; ``--jobs``
runs that many at once, one CPU thread each.

Run (about 2 hours with ``--jobs 2`` on 2 quiet CPU cores; ``--real``, several hours)::

    python bench/search_quality.py --jobs 2
    python bench/search_quality.py --real --jobs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path

from common import REAL_QUICK_TASKS, REAL_TASKS, publish, section_preamble, table

TASKS = {"0-4 -> 5-9": ("0-4", "5-9"), "even -> odd": ("0,2,4,6,8", "1,3,5,7,9"), "5-9 -> 0-4": ("5-9", "0-4")}
SHOTS = (5, 10, 20)
#: The shot count each task's ablations run at.
#: The hand-written loop given as many training images as our search uses (median 25,200 on
#: these tasks): epochs scaled up, everything else the same.
LOOP_AT_OUR_COMPUTE = "hand-written loop, as many images as ours"
OUR_IMAGES = 25_000
ABLATION_SHOTS = {"0-4 -> 5-9": 5, "even -> odd": 10, "5-9 -> 0-4": 20}
MAIN_METHODS = ("hand-written loop", "ours", "random search, no pruning", "ours, a third of the trials",
                LOOP_AT_OUR_COMPUTE)

REAL_HAND = "hand-written fine-tune, Lite0, 15 epochs"
REAL_HAND_AT_OUR_COMPUTE = "hand-written fine-tune, Lite0, as many images as ours"
REAL_MAIN_METHODS = ("ours", REAL_HAND, REAL_HAND_AT_OUR_COMPUTE, "random search, no pruning")
#: Rows recorded by another method's run ("ours" records its cross-checked result too).
REAL_DERIVED = ("ours, cross-check 2 x 3 folds",)
REAL_ABLATION_SHOTS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one task, one seed, 3 short trials: proves the script works")
    parser.add_argument("--real", action="store_true", help="real pretrained sources (ImageNet EfficientNet-Lite) on photos and digits")
    parser.add_argument("--shots", type=int, nargs="+", help="labelled images per class to run (default: 5 10 20)")
    parser.add_argument("--methods", nargs="+", help="methods to run (default: every one)")
    parser.add_argument("--report-only", action="store_true", help="run nothing: publish the table of the recorded runs")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per task (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default 1)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"), help="source checkpoints")
    parser.add_argument("--runs", type=Path, help="JSONL of finished runs (default: CACHE_DIR/search_quality.jsonl)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    if args.real and args.seeds == parser.get_default("seeds"):
        args.seeds = 3
    name = "search_quality" + ("-real" if args.real else "") + ("-quick" if args.quick else "")
    args.runs = args.runs or args.cache_dir / f"{name}.jsonl"
    return args


def planned_runs(args: argparse.Namespace) -> list[dict]:
    """Every (method, task, shots, seed) to run, main rows first; ``--shots`` and ``--methods`` keep part."""
    plan = planned_real_runs(args) if args.real else planned_digits_runs(args)
    return [job for job in plan
            if (not args.shots or job["shots"] in args.shots) and (not args.methods or job["method"] in args.methods)]


def planned_real_runs(args: argparse.Namespace) -> list[dict]:
    """``--real``: the main methods at every shot count, the variants at :data:`REAL_ABLATION_SHOTS`."""
    from real_quality_methods import VARIANTS

    tasks = REAL_QUICK_TASKS if args.quick else REAL_TASKS
    shots = (3,) if args.quick else SHOTS
    plan = [{"method": method, "task": task, "shots": shot, "seed": seed}  # instance by instance
            for shot in shots for task in tasks for seed in range(args.seeds) for method in REAL_MAIN_METHODS]
    plan += [{"method": method, "task": task, "shots": shots[0] if args.quick else REAL_ABLATION_SHOTS, "seed": seed}
             for method in VARIANTS if method not in REAL_MAIN_METHODS for task in tasks for seed in range(args.seeds)]
    return plan


def planned_digits_runs(args: argparse.Namespace) -> list[dict]:
    """The digits tasks: the main methods at every shot count, the ablations at one per task."""
    from quality_methods import VARIANTS

    tasks = list(TASKS)[:1] if args.quick else list(TASKS)
    shots = SHOTS[:1] if args.quick else SHOTS
    plan = [
        {"method": method, "task": task, "shots": shot, "seed": seed}
        for method in MAIN_METHODS
        for task in tasks
        for shot in shots
        for seed in range(args.seeds)
    ]
    plan += [
        {"method": method, "task": task, "shots": ABLATION_SHOTS[task] if not args.quick else shots[0], "seed": seed}
        for method in VARIANTS
        if method not in MAIN_METHODS
        for task in tasks
        for seed in range(args.seeds)
    ]
    return plan


def source_checkpoint(task: str, cache_dir: Path, quick: bool = False) -> Path:
    """The ``test_resnet`` backbone trained on the task's source digits (a one-trial search, cached)."""
    from automl_transfer import TransferSearch

    digits = TASKS[task][0]
    run_dir = cache_dir / f"test_resnet-{digits.replace(',', '')}-source{'-quick' if quick else ''}"
    weights = run_dir / "best" / "model.safetensors"
    if not weights.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        epochs = 2 if quick else 30
        (run_dir / "space.yaml").write_text(
            f"source: timm:test_resnet@none\nimage_size: 32\nlr: 3.0e-3\nweight_decay: 0.05\nepochs: {epochs}\n"
            "batch_size: 64\naugment: light\nlabel_smoothing: 0.1\nstart: []\n"
        )
        TransferSearch(dataset=f"digits:classes={digits},size=32", space=str(run_dir / "space.yaml"), trials=1,
                       run_dir=run_dir, quiet=True, device="cpu", force_new=True, refit=False).run()
    return weights


def run_one(job: dict) -> list[dict]:
    """Run one planned run in this (worker) process and return its records (``--real``'s "ours" gives two)."""
    import torch

    torch.set_num_threads(1)
    identity = {key: job[key] for key in ("method", "task", "shots", "seed")}
    if job["real"]:
        return [{**identity, **record} for record in run_real(job)]
    from quality_methods import Instance, loop_epochs, search, set_trials, yardstick

    if job["quick"]:
        set_trials(3, {"epochs": 2, "min_steps": 10})

    from automl_transfer.data.datasets import load_dataset
    from automl_transfer.data.prepare import prepare_data

    source, target = TASKS[job["task"]]
    spec = f"digits:classes={target},per_class={job['shots']},seed={job['seed']},size=32"
    data = prepare_data(load_dataset(spec), 32, val_fraction=0.2, seed=job["seed"])
    instance = Instance(job["task"], job["shots"], job["seed"], spec, Path(job["checkpoint"]), data)
    if job["method"] == "hand-written loop":
        outcome = yardstick(instance)
    elif job["method"] == LOOP_AT_OUR_COMPUTE:
        labelled = len(data.train) + len(data.val)
        outcome = yardstick(instance, loop_epochs(labelled, 1_000 if job["quick"] else OUR_IMAGES))
    else:
        with tempfile.TemporaryDirectory() as folder:
            outcome = search(instance, Path(folder) / "run", job["method"])
    return [{**identity, **outcome}]


def run_real(job: dict) -> list[dict]:
    """Run one ``--real`` run: a search variant (see ``real_quality_methods.search``), or the hand-written fine-tune.

    The fine-tune at our compute gets as many epochs as make ``job["our_images"]`` (what our
    search processed on the same task, shots and seed) over its labelled images.
    """
    import real_quality_methods as methods

    from automl_transfer.data.datasets import load_dataset

    tasks = REAL_QUICK_TASKS if job["quick"] else REAL_TASKS
    dataset = tasks[job["task"]].format(shots=job["shots"], seed=job["seed"])
    if job["method"] == REAL_HAND:
        return [methods.hand_written(dataset, job["seed"], 1 if job["quick"] else methods.HAND_EPOCHS)]
    if job["method"] == REAL_HAND_AT_OUR_COMPUTE:
        epochs = max(1, round(job["our_images"] / len(load_dataset(dataset).train)))
        return [methods.hand_written(dataset, job["seed"], epochs)]
    if job["quick"]:
        methods.TRIALS = 2
    changes = {"epochs": 1, "source": ["lite:lite0"]} if job["quick"] else {}
    with tempfile.TemporaryDirectory() as folder:
        return methods.search(dataset, job["seed"], Path(folder) / "run", job["method"], changes)


def run_jobs(todo: list[dict], jobs: int, done: list[dict], log_path: Path) -> None:
    """Run ``todo`` in ``jobs`` worker processes, appending each record to ``done`` and the JSONL file."""
    if not todo:
        return
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=20) as pool, log_path.open("a") as log:
        for records in pool.imap_unordered(run_one, todo):
            for record in records:
                log.write(json.dumps(record) + "\n")
                log.flush()
                done.append(record)
                print(f"{len(done)}: {record['method']} | {record['task']} | {record['shots']} | {record['seed']}: "
                      f"{record['test']:.3f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run (or resume) every planned run, then publish the table."""
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.runs.unlink(missing_ok=True)  # a quick run proves the script works: it starts afresh
    recorded = [json.loads(line) for line in args.runs.read_text().splitlines()] if args.runs.is_file() else []
    done = list({_key(run): run for run in reversed(recorded)}.values())  # two runs of one key: the first counts
    finished = {_key(run) for run in done}
    plan = planned_runs(args)
    todo = [{**job, "quick": args.quick, "real": args.real} for job in plan
            if _key(job) not in finished and not args.report_only]
    if args.real:
        # The fine-tune at our compute needs ours' images on the same instance: it runs second.
        later = [job for job in todo if job["method"] == REAL_HAND_AT_OUR_COMPUTE]
        run_jobs([job for job in todo if job not in later], args.jobs, done, args.runs)
        ours = {_key(run)[1:]: run["images"] for run in done if run["method"] == "ours"}
        run_jobs([{**job, "our_images": ours[_key(job)[1:]]} for job in later if _key(job)[1:] in ours],
                 args.jobs, done, args.runs)
    else:
        tasks = list(TASKS)[:1] if args.quick else list(TASKS)
        checkpoints = {task: os.path.abspath(source_checkpoint(task, args.cache_dir, args.quick)) for task in tasks}
        run_jobs([{**job, "checkpoint": checkpoints[job["task"]]} for job in todo], args.jobs, done, args.runs)
    planned = {_key(job) for job in plan}
    planned |= {(derived, *key[1:]) for key in planned if key[0] == "ours" for derived in (REAL_DERIVED if args.real else ())}
    runs = [run for run in done if _key(run) in planned]
    if args.real:
        publish("search-quality-real", report_real(runs, args), args.quick, args.results)
    else:
        publish("search-quality", report(runs, args), args.quick, args.results)


def _key(run: dict) -> tuple:
    """What identifies a run: its method, task, shots and seed."""
    return run["method"], run["task"], run["shots"], run["seed"]


def report(runs: list[dict], args: argparse.Namespace) -> str:
    """The Markdown section: medians per task and overall, compute, and the verdicts of issue 8."""
    columns = sorted({(run["task"], run["shots"]) for run in runs}, key=lambda key: (list(TASKS).index(key[0]), key[1]))
    header, rows = _method_table(runs, list(dict.fromkeys(run["method"] for run in runs)), columns, "{:.1f}")
    return (
        section_preamble("Search quality: our search vs the 20-line script, random search and ablations "
                         "(bench/search_quality.py)", None)
        + f"- tasks: digits {', '.join(TASKS)} at {', '.join(map(str, SHOTS))} labels per class, {args.seeds} seeds "
        "each; test accuracy of the final model on the held-out images (median [min-max]); compute: training images "
        "processed by the whole method, and wall seconds on one CPU thread\n"
        + verdicts(runs, columns)
        + "\n"
        + table(header, rows)
    )


def verdicts(runs: list[dict], columns: list[tuple[str, int]]) -> str:
    """The issue's two goals, measured: ours >= the hand-written loop on every task; random's accuracy at a third."""
    def median_of(method: str, column: tuple[str, int] | None = None) -> float:
        values = [run["test"] for run in runs if run["method"] == method and (column is None or (run["task"], run["shots"]) == column)]
        return statistics.median(values) if values else float("nan")

    wins = [column for column in columns if median_of("ours", column) >= median_of("hand-written loop", column)]
    wins_at_compute = [column for column in columns if median_of("ours", column) >= median_of(LOOP_AT_OUR_COMPUTE, column)]
    random_images = statistics.median(run["images"] for run in runs if run["method"] == "random search, no pruning") \
        if any(run["method"] == "random search, no pruning" for run in runs) else float("nan")
    third = [run for run in runs if run["method"] == "ours, a third of the trials"]
    third_images = statistics.median(run["images"] for run in third) if third else float("nan")
    return (
        f"- ours >= the hand-written loop (median) on **{len(wins)} of {len(columns)}** task columns; overall median "
        f"{median_of('ours'):.3f} vs {median_of('hand-written loop'):.3f}; against the loop given as many images as "
        f"ours: **{len(wins_at_compute)} of {len(columns)}**, overall median {median_of(LOOP_AT_OUR_COMPUTE):.3f}\n"
        f"- random search's final accuracy {median_of('random search, no pruning'):.3f}; ours with a third of the trials "
        f"{median_of('ours, a third of the trials'):.3f} using {third_images / random_images:.0%} of random search's "
        f"training images\n"
    )



def report_real(runs: list[dict], args: argparse.Namespace) -> str:
    """The ``--real`` section: medians per task and shots, compute, and the issue's goal against the fine-tune."""
    from real_quality_methods import TRIALS

    tasks = list(REAL_QUICK_TASKS if args.quick else REAL_TASKS)
    columns = sorted({(run["task"], run["shots"]) for run in runs}, key=lambda key: (key[1], tasks.index(key[0])))
    methods = [method for method in dict.fromkeys(run["method"] for run in runs)]
    order = REAL_MAIN_METHODS + REAL_DERIVED
    methods.sort(key=lambda method: order.index(method) if method in order else len(order))
    header, rows = _method_table(runs, methods, columns, "{:.0f}")
    return (
        section_preamble("Search quality on real pretrained sources (bench/search_quality.py --real)", None)
        + f"- our search: the `lite` preset as shipped (ImageNet EfficientNet-Lite0/1/2, 64 px, its defaults), "
        f"{TRIALS} trials (the preset's 3 sources times the 2 default start points make 6: a full fine-tune and a "
        "half-frozen one at lr 3e-3 on each source, best-ranked source first; the sampler's trials follow), then "
        "the refit; random search: the same space and budget, no start points, no pruning; "
        "the hand-written fine-tune: ImageNet Lite0, AdamW lr 1e-3, weight decay 0.05, cosine, batch 32, every "
        "labelled image (bench/real_sources.py), for 15 epochs and for as many training images as our search "
        "processed on the same task and seed\n"
        + f"- {args.seeds} seeds per task and shot count (the seed picks the labelled images, the validation split "
        "and the search's sampling); test accuracy on held-out images nothing selects on, median [min-max]; "
        "compute: training images processed and wall seconds on one CPU thread (Lite1/2 cost more per image than "
        "Lite0)\n"
        + real_verdicts(runs, columns)
        + "\n"
        + table(header, rows)
    )


def real_verdicts(runs: list[dict], columns: list[tuple[str, int]]) -> str:
    """The issue's goal, measured: ours against the hand-written fine-tune at equal compute, per column and seed."""
    def by_instance(method: str) -> dict[tuple, float]:
        return {_key(run)[1:]: run["test"] for run in runs if run["method"] == method}

    def column_median(results: dict[tuple, float], column: tuple[str, int]) -> float:
        values = [value for key, value in results.items() if key[:2] == column]
        return statistics.median(values) if values else float("nan")

    ours = by_instance("ours")
    lines = []
    for other in (REAL_HAND_AT_OUR_COMPUTE, REAL_HAND, "random search, no pruning"):
        theirs = by_instance(other)
        shared = [column for column in columns
                  if any(key[:2] == column for key in ours) and any(key[:2] == column for key in theirs)]
        if not shared:
            continue
        wins = [column for column in shared if column_median(ours, column) >= column_median(theirs, column)]
        differences = [100 * (ours[key] - theirs[key]) for key in ours if key in theirs]
        lines.append(f"- ours >= {other} (median) on **{len(wins)} of {len(shared)}** task columns; median of the "
                     f"per-seed differences {statistics.median(differences):+.1f} points "
                     f"(range {min(differences):+.1f} to {max(differences):+.1f})\n")
    sources = [run.get("best_source") for run in runs if run["method"] == "ours"]
    if sources:
        counts = ", ".join(f"{source} {sources.count(source)}" for source in sorted(set(sources)))
        lines.append(f"- the source our search kept: {counts}\n")
    return "".join(lines)


def _method_table(runs: list[dict], methods: list[str], columns: list[tuple[str, int]],
                  seconds_format: str) -> tuple[list[str], list[list[str]]]:
    """The header and one row per method: test accuracy per (task, shots) column and overall, images, seconds."""
    rows = []
    for method in methods:
        mine = [run for run in runs if run["method"] == method]
        by_column = [_cell([run["test"] for run in mine if (run["task"], run["shots"]) == column]) for column in columns]
        rows.append([method, *by_column, _cell([run["test"] for run in mine]),
                     f"{statistics.median(run['images'] for run in mine):,.0f}",
                     seconds_format.format(statistics.median(run["seconds"] for run in mine))])
    header = ["method", *(f"{task} @{shots}" for task, shots in columns), "all", "images (median)", "seconds (median)"]
    return header, rows


def _cell(values: list[float]) -> str:
    """Median [min-max] of test accuracies, or ``-``."""
    return f"{statistics.median(values):.3f} [{min(values):.2f}-{max(values):.2f}]" if values else "-"


if __name__ == "__main__":
    main()
