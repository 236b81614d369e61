"""The offline demo: build source models, search how to transfer them, check the result.

``automl-transfer demo`` (or ``python -m automl_transfer.demo``) runs the whole job on
scikit-learn's bundled handwritten digits, with no download:

1. **Sources.** Two tiny timm models, ``test_resnet`` and ``test_efficientnet``, are trained
   on the digits 0-4 with the core's own training code, and their backbones saved as
   ``.safetensors`` files in the cache folder (``.cache/demo/`` under the working directory).
   A later run reuses them when they were built with the same recipe.
2. **Search.** The target task is the digits 5-9 with only ``per_class`` labelled images per
   digit (half of them for validation); every other image of 5-9 is the held-out test set,
   which the search never sees. A :class:`~automl_transfer.search.TransferSearch` (TPE +
   Hyperband) tries both sources, the same architectures from random weights (``@none``),
   freeze depths, learning rates and regularisation, prints the leaderboard and writes the
   best model to ``RUN_DIR/best``.
3. **Baseline.** Hyperband stops trials that learn slower than the others, and trials from
   random weights do, so the from-scratch sources get a search of their own with the same
   number of trials (in ``RUN_DIR/scratch``).
4. **Transfer or scratch?** The best transferred configuration of the main search and the
   best configuration of the baseline search, each picked by validation score, are trained
   again from the seed their trial had (which gives back the trial's model on a CPU) and
   scored on the held-out test set. The demo says in one sentence which won.
5. **Predict.** The best model classifies a few held-out images, as
   ``automl-transfer predict RUN_DIR RUN_DIR/samples`` would.

Running it again resumes the finished searches (only the two family winners are trained
again); ``--fresh`` starts them over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file

from automl_transfer.datasets import load_dataset, prepare_data
from automl_transfer.devices import resolve_device
from automl_transfer.errors import AutoMLTransferError
from automl_transfer.freezing import freeze_backbone
from automl_transfer.inference import load_model
from automl_transfer.model import TransferModel
from automl_transfer.plugins import get_component, load_plugins
from automl_transfer.recovery import SEED_TRIAL
from automl_transfer.run_dir import JOURNAL_NAME, SUMMARY_NAME
from automl_transfer.search import TransferSearch
from automl_transfer.search_config import SearchConfig
from automl_transfer.sources import NO_WEIGHTS, SourceSpec, build_backbone
from automl_transfer.training import TrialSettings, evaluate, fit
from automl_transfer.trial_runner import run_trial

#: The timm architectures the demo pretrains and transfers.
SOURCE_ARCHITECTURES = ("test_resnet", "test_efficientnet")
#: The digits the sources learn, and the disjoint digits of the target task.
SOURCE_DIGITS = "0-4"
TARGET_DIGITS = "5-9"
#: Names of the two families of sources the demo compares.
TRANSFER = "transfer"
SCRATCH = "from scratch"
SPACE_FILE = "demo-space.yaml"
#: The from-scratch baseline search's run dir, inside the demo's.
SCRATCH_DIR = "scratch"
SAMPLES_DIR = "samples"
#: Recipe keys stored in a source checkpoint's metadata; a cached file is reused only when they match.
_RECIPE_KEYS = ("architecture", "dataset", "image_size", "epochs", "seed")


@dataclass
class DemoSettings:
    """What the demo does; every field is also a flag of ``automl-transfer demo``.

    :param run_dir: where the search, best model, search space and sample images go.
    :param cache_dir: where the source checkpoints are kept between runs.
    :param trials: trials of the target search.
    :param per_class: labelled target images per digit (half train, half validation).
    :param source_epochs: epochs of source pretraining.
    :param target_epochs: epochs of each search trial (Hyperband stops poor ones early).
    :param image_size: side of the square images, in pixels.
    :param seed: seeds the data split, the sampler and training.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param samples: held-out images to classify at the end.
    :param fresh: discard a search already in ``run_dir`` and search again.
    :param quiet: no per-trial lines.
    """

    run_dir: Path = Path("runs/demo")
    cache_dir: Path = Path(".cache/demo")
    trials: int = 24
    per_class: int = 6
    source_epochs: int = 30
    target_epochs: int = 30
    image_size: int = 32
    seed: int = 0
    device: str = "auto"
    samples: int = 6
    fresh: bool = False
    quiet: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        """Return settings for a run of well under a minute (for tests): few epochs and trials."""
        values = {"trials": 4, "source_epochs": 2, "target_epochs": 2, "samples": 3}
        values.update(overrides)
        return cls(**values)


@dataclass
class FamilyResult:
    """The held-out test score of one family's best configuration.

    :param family: :data:`TRANSFER` or :data:`SCRATCH`.
    :param trial: the search trial whose parameters were retrained.
    :param params: those parameters.
    :param accuracy: accuracy on the held-out test set.
    :param test_images: the size of the held-out test set.
    """

    family: str
    trial: int
    params: dict[str, Any]
    accuracy: float
    test_images: int


@dataclass
class DemoResult:
    """What the demo found.

    :param run_dir: the search's run directory (best model in ``run_dir/best``).
    :param summary: the search's ``summary.json`` content.
    :param families: the test score of each family that had a trial, by family name.
    :param transfer_won: ``True`` when transfer scored higher than training from scratch,
        ``None`` when one family had no trial to compare.
    :param predictions: ``(image path, true label, predicted label, score)`` per sample.
    """

    run_dir: Path
    summary: dict[str, Any]
    families: dict[str, FamilyResult]
    transfer_won: bool | None
    predictions: list[tuple[str, str, str, float]] = field(default_factory=list)


def source_dataset(settings: DemoSettings) -> str:
    """Return the dataset spec the sources are trained on."""
    return f"digits:classes={SOURCE_DIGITS},size={settings.image_size}"


def target_dataset(settings: DemoSettings) -> str:
    """Return the dataset spec of the target task (few labels, the rest held out)."""
    return f"digits:classes={TARGET_DIGITS},per_class={settings.per_class},seed={settings.seed},size={settings.image_size}"


def family_of(source: str) -> str:
    """Return :data:`SCRATCH` for a source with random weights (``@none``), else :data:`TRANSFER`."""
    return SCRATCH if SourceSpec.parse(source).weights == NO_WEIGHTS else TRANSFER


def source_checkpoint(architecture: str, settings: DemoSettings, console: Console) -> Path:
    """Return the backbone checkpoint of ``architecture`` trained on the source digits, training it if needed.

    The file is ``CACHE_DIR/<architecture>-source.safetensors``; its metadata records the
    recipe, and a file with another recipe is replaced.

    :raises AutoMLTransferError: the cache folder cannot be written, or a bad device.
    """
    path = Path(settings.cache_dir) / f"{architecture}-source.safetensors"
    recipe = {
        "architecture": architecture,
        "dataset": source_dataset(settings),
        "image_size": str(settings.image_size),
        "epochs": str(settings.source_epochs),
        "seed": str(settings.seed),
    }
    cached = _read_recipe(path)
    if cached is not None and all(cached.get(key) == recipe[key] for key in _RECIPE_KEYS):
        accuracy = float(cached.get("val_accuracy", "nan"))
        console.print(f"{architecture}: cached {path} (validation accuracy on digits {SOURCE_DIGITS}: {accuracy:.1%})")
        return path
    data = prepare_data(load_dataset(recipe["dataset"]), settings.image_size, val_fraction=0.2, seed=settings.seed)
    torch.manual_seed(settings.seed)
    backbone = build_backbone(f"timm:{architecture}@{NO_WEIGHTS}")
    head = get_component("head", "linear").build(backbone.num_features, len(data.class_names))
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    trial_settings = TrialSettings(
        lr=3e-3,
        weight_decay=0.05,
        l2sp=0.0,
        epochs=settings.source_epochs,
        batch_size=64,
        label_smoothing=0.1,
        augment=True,
        device=resolve_device(settings.device),
        seed=settings.seed,
    )
    with console.status(f"{architecture}: training on digits {SOURCE_DIGITS} ({len(data.train)} images)") as status:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            status.update(
                f"{architecture}: training on digits {SOURCE_DIGITS}, epoch {epoch}/{settings.source_epochs}, "
                f"validation accuracy {metrics['accuracy']:.1%}"
            )

        result = fit(model, freeze_backbone(backbone, 0.0), data, trial_settings, on_epoch)
    recipe["val_accuracy"] = f"{result.metrics['accuracy']:.4f}"
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in backbone.module.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(state, str(partial), metadata=recipe)
        os.replace(partial, path)
    except OSError as error:
        raise AutoMLTransferError(
            f"cannot write the source checkpoint {path}: {error.strerror or error}; choose another --cache-dir"
        ) from error
    console.print(
        f"{architecture}: trained (validation accuracy on digits {SOURCE_DIGITS}: "
        f"{result.metrics['accuracy']:.1%}), saved {path}"
    )
    return path


def _read_recipe(path: Path) -> dict[str, str] | None:
    """Return the metadata of a cached checkpoint, or ``None`` when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception:  # a damaged cache file is rebuilt, whatever safetensors says about it
        return None


def write_space(path: Path, sources: list[str], settings: DemoSettings) -> Path:
    """Write a target search space over ``sources`` to ``path``.

    :param path: the YAML file to write (its folder is created).
    :param sources: the sources to choose from; weight files are written relative to the YAML file.
    :returns: ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        spec = SourceSpec.parse(source)
        if spec.weights_file is not None:
            spec = SourceSpec(spec.plugin, spec.model, os.path.relpath(spec.weights_file, path.parent.resolve()))
        written.append(str(spec))
    space = {
        "source": written,
        "image_size": settings.image_size,
        "freeze_depth": [0.0, 0.25, 0.5, 0.75],
        "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
        "weight_decay": {"low": 1.0e-3, "high": 0.1, "log": True},
        "l2sp": [0.0, 0.01, 0.1],
        "head": "linear",
        "epochs": settings.target_epochs,
        "batch_size": 5,
        "label_smoothing": 0.1,
        # Flips and crops turn digits into other digits' shapes; with a handful of images they hurt.
        "augment": False,
        "warmup_epochs": 1.0,
    }
    header = f"# Written by `automl-transfer demo`; the weight files were trained on digits {SOURCE_DIGITS}.\n"
    path.write_text(header + yaml.safe_dump(space, sort_keys=False))
    return path


def run_search(space: Path, run_dir: Path, study_name: str, settings: DemoSettings) -> tuple[TransferSearch, optuna.Study]:
    """Run (or resume) a target search over ``space`` in ``run_dir``; return the search and its study."""
    config = SearchConfig(
        dataset=target_dataset(settings),
        space=str(space),
        trials=settings.trials,
        run_dir=run_dir,
        study=study_name,
        device=settings.device,
        seed=settings.seed,
        metric="accuracy",
        val_fraction=0.5,
        quiet=settings.quiet,
    )
    search = TransferSearch(config)
    search.run()
    return search, search.open()


def family_winners(study: optuna.Study, direction: str) -> dict[str, FrozenTrial]:
    """Pick each family's best trial by validation score.

    A complete trial beats any pruned one; among pruned trials (a family Hyperband stopped
    early every time) the best last reported score wins. Ties (a handful of validation images
    often give several trials 100%) go to the lower validation loss.

    :returns: the winning trial of each family that has a complete or pruned trial.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    ranked: dict[str, tuple[tuple[int, float, float], FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        params = trial.user_attrs.get("params")
        if not params or not trial.intermediate_values:
            continue
        last_epoch = max(trial.intermediate_values)
        score = trial.value if trial.state == TrialState.COMPLETE else trial.intermediate_values[last_epoch]
        val_loss = trial.user_attrs.get(f"epoch_{last_epoch}", {}).get("val_loss", math.inf)
        key = (int(trial.state == TrialState.COMPLETE), sign * score, -val_loss)
        if not math.isfinite(key[1]):
            continue
        family = family_of(params["source"])
        if family not in ranked or key > ranked[family][0]:
            ranked[family] = (key, trial)
    return {family: trial for family, (_, trial) in ranked.items()}


def score_on_test(search: TransferSearch, trial: FrozenTrial) -> FamilyResult:
    """Train ``trial``'s configuration again, from the seed the search gave it, and score it on the held-out test set.

    On the CPU this reproduces the trial's model exactly (the search keeps only the best
    model of all, not the best of each family).
    """
    params = trial.user_attrs["params"]
    seed = search.config.seed + trial.user_attrs.get(SEED_TRIAL, trial.number)
    trained = run_trial(params, search.prepare, search.device, lambda epoch, metrics: None, seed=seed)
    interpolation = trained.backbone.data_config.get("interpolation", "bilinear")
    test = search.prepare(trained.image_size, interpolation).test
    scores = evaluate(trained.model, test, search.device, batch_size=256)
    return FamilyResult(family_of(params["source"]), trial.number, params, scores["accuracy"], len(test))


def verdict(families: dict[str, FamilyResult]) -> tuple[bool | None, str]:
    """Say in one sentence whether transfer beat training from scratch on the test set.

    :returns: ``(transfer_won, sentence)``; ``transfer_won`` is ``None`` when a family is missing.
    """
    if TRANSFER not in families or SCRATCH not in families:
        missing = SCRATCH if TRANSFER in families else TRANSFER
        return None, f"No comparison: the search tried no {missing} configuration; run more --trials."
    transfer, scratch = families[TRANSFER].accuracy, families[SCRATCH].accuracy
    won = transfer > scratch
    return won, (
        f"Transfer {'beat' if won else 'did not beat'} training from scratch on the held-out test set: "
        f"{transfer:.1%} vs {scratch:.1%} accuracy ({families[TRANSFER].test_images} images)."
    )


def write_samples(settings: DemoSettings, count: int) -> list[tuple[Path, str]]:
    """Save ``count`` held-out target images, spread over the test set, as PNG files in ``RUN_DIR/samples``.

    :returns: each file with its true label.
    """
    dataset = load_dataset(target_dataset(settings))
    folder = Path(settings.run_dir) / SAMPLES_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    test = list(dataset.test or [])
    step = max(1, len(test) // max(1, count))
    written = []
    for number, (image, label) in enumerate(test[::step][:count]):
        path = folder / f"sample-{number}.png"
        image.save(path)
        written.append((path, dataset.class_names[label]))
    return written


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Run the whole demo (see the module docstring) and print what happens.

    :param settings: what to run.
    :param console: where to print (default: standard output).
    :returns: the scores, the verdict and the predictions.
    :raises AutoMLTransferError: an unusable run dir, cache dir or device.
    """
    console = console or Console()
    load_plugins()
    run_dir = Path(settings.run_dir)
    if settings.fresh and (run_dir / JOURNAL_NAME).is_file():
        shutil.rmtree(run_dir)

    started = time.monotonic()
    console.rule(f"1/5  Source models: trained on digits {SOURCE_DIGITS}")
    checkpoints = {name: source_checkpoint(name, settings, console) for name in SOURCE_ARCHITECTURES}
    transfer_sources = [f"timm:{name}@{path.resolve()}" for name, path in checkpoints.items()]
    scratch_sources = [f"timm:{name}@{NO_WEIGHTS}" for name in checkpoints]

    console.rule(f"2/5  Search: digits {TARGET_DIGITS}, {settings.per_class} labelled images per digit")
    space = write_space(run_dir / SPACE_FILE, transfer_sources + scratch_sources, settings)
    console.print(f"search space: {space}", highlight=False)
    search, study = run_search(space, run_dir, "demo", settings)

    console.rule("3/5  Baseline: the same search from random weights only")
    console.print(
        "Hyperband stops trials that learn slower than others; from-scratch trials do, so they get a search of "
        "their own with the same budget.",
        highlight=False,
    )
    scratch_dir = run_dir / SCRATCH_DIR
    scratch_space = write_space(scratch_dir / SPACE_FILE, scratch_sources, settings)
    scratch_search, scratch_study = run_search(scratch_space, scratch_dir, "demo-scratch", settings)

    console.rule("4/5  Transfer or training from scratch? Held-out test set")
    winners = {
        TRANSFER: (search, family_winners(study, search.direction).get(TRANSFER)),
        SCRATCH: (scratch_search, family_winners(scratch_study, scratch_search.direction).get(SCRATCH)),
    }
    families: dict[str, FamilyResult] = {}
    for family, (family_search, trial) in winners.items():
        if trial is None:
            continue
        result = score_on_test(family_search, trial)
        families[family] = result
        params = result.params
        console.print(
            f"best {family} configuration by validation (trial {trial.number}): {_short(params['source'])}, "
            f"freeze_depth {params['freeze_depth']}, lr {params['lr']:.3g}, weight_decay {params['weight_decay']:.3g}, "
            f"l2sp {params['l2sp']}: test accuracy {result.accuracy:.1%}",
            highlight=False,
        )
    transfer_won, sentence = verdict(families)
    console.print(sentence, style="bold", highlight=False)

    console.rule(f"5/5  Predict: the best model on held-out images ({run_dir / 'best'})")
    samples = write_samples(settings, settings.samples)
    model = load_model(run_dir, device=settings.device)
    predictions = []
    for (path, truth), prediction in zip(samples, model.predict([path for path, _ in samples])):
        predictions.append((str(path), truth, prediction.label, prediction.score))
        mark = "right" if prediction.label == truth else "WRONG"
        console.print(
            f"{path}: true {truth}, predicted {prediction.label} ({prediction.score:.0%})  {mark}", highlight=False
        )
    console.print(f"the same from the command line: automl-transfer predict {run_dir} {run_dir / SAMPLES_DIR}")
    console.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)
    summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    return DemoResult(run_dir, summary, families, transfer_won, predictions)


def _short(source: str) -> str:
    """Show a source's weight file by its name only: ``timm:test_resnet@test_resnet-source.safetensors``."""
    spec = SourceSpec.parse(source)
    return str(SourceSpec(spec.plugin, spec.model, spec.weights_file.name)) if spec.weights_file else source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's flags to ``parser`` (defaults from :class:`DemoSettings`)."""
    defaults = DemoSettings()
    parser.add_argument(
        "--run-dir", type=Path, default=defaults.run_dir, help=f"run directory (default {defaults.run_dir})"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=defaults.cache_dir, help=f"source checkpoints (default {defaults.cache_dir})"
    )
    parser.add_argument("--trials", type=int, help=f"search trials (default {defaults.trials})")
    parser.add_argument(
        "--per-class",
        type=int,
        default=defaults.per_class,
        help=f"labelled images per target digit, half for validation (default {defaults.per_class})",
    )
    parser.add_argument("--source-epochs", type=int, help=f"epochs of source training (default {defaults.source_epochs})")
    parser.add_argument("--target-epochs", type=int, help=f"epochs per search trial (default {defaults.target_epochs})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default {defaults.seed})")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--fresh", action="store_true", help="discard the search already in the run dir")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument("--quick", action="store_true", help="a run of well under a minute: few epochs and trials")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """Build :class:`DemoSettings` from parsed flags; ``--quick`` changes the defaults, flags still win.

    :raises AutoMLTransferError: a count that is not positive.
    """
    chosen = {
        "run_dir": args.run_dir,
        "cache_dir": args.cache_dir,
        "per_class": args.per_class,
        "seed": args.seed,
        "device": args.device,
        "fresh": args.fresh,
        "quiet": args.quiet,
    }
    for name in ("trials", "source_epochs", "target_epochs"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    for name in ("trials", "per_class", "source_epochs", "target_epochs"):
        if name in chosen and chosen[name] < 1:
            raise AutoMLTransferError(f"--{name.replace('_', '-')} must be at least 1, not {chosen[name]}")
    if chosen["per_class"] < 2:
        raise AutoMLTransferError("--per-class must be at least 2: half of the images are kept for validation")
    return DemoSettings.quick(**chosen) if args.quick else DemoSettings(**chosen)


def main(argv: list[str] | None = None) -> int:
    """Run ``automl-transfer demo`` with ``argv`` (default: the process's arguments); return the exit code."""
    from automl_transfer.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
