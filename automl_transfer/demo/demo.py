"""The offline demo: build source models, search how to transfer them, check the result.

``automl-transfer demo`` (or ``python -m automl_transfer.demo``) runs the whole job on
scikit-learn's bundled handwritten digits, with no download:

1. **Sources.** Two tiny timm models, ``test_resnet`` and ``test_efficientnet``, are trained
   on the digits 0-4, each by a one-trial search with a fixed recipe whose run dir is in the
   cache folder (``.cache/demo/<model>-source/`` under the working directory); its
   ``best/model.safetensors`` is the source the target search transfers from. A later run
   resumes those finished searches, so the sources are reused while the recipe is the same.
2. **Search.** The target task is the digits 5-9 with only ``per_class`` labelled images per
   digit (half of them for validation); every other image of 5-9 is the held-out test set,
   which the search never sees. A :class:`~automl_transfer.search.search.TransferSearch`
   transfers from both sources (start points first, then TPE with Hyperband), over freeze
   depth, learning rate and regularisation; the winner by validation score is trained again
   on every labelled image (refit) and kept in ``RUN_DIR/best``.
3. **Baseline.** The same search over the same architectures from random weights
   (``@none``), with the same budget, in ``RUN_DIR/scratch``: what a user gets without
   transfer.
4. **Transfer or scratch?** Both saved models, exactly as they are on disk, classify the
   held-out test set with ``predict``; the demo says in one sentence which won.
5. **Predict.** The transfer model classifies a few held-out images, as
   ``automl-transfer predict RUN_DIR RUN_DIR/samples`` would.

Running it again resumes the finished searches (nothing is trained again); ``--fresh``
starts them over, and so does a change to the demo's spaces or tasks (a new version).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.data.datasets import load_dataset
from automl_transfer.demo.settings import DemoSettings
from automl_transfer.inference.predictor import load_model
from automl_transfer.model.source_spec import SourceSpec, random_weights
from automl_transfer.registry import load_plugins
from automl_transfer.search.search import TransferSearch
from automl_transfer.storage.checkpoint import BEST_LINK, WEIGHTS_FILE
from automl_transfer.storage.run_dir import JOURNAL_NAME, SUMMARY_NAME

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
#: How the sources are trained on the source digits (a fixed, one-trial search space).
SOURCE_RECIPE = {
    "head": "linear",
    "freeze_depth": 0.0,
    "lr": 3.0e-3,
    "weight_decay": 0.05,
    "l2sp": 0.0,
    "batch_size": 64,
    "label_smoothing": 0.1,
    "augment": True,
    "warmup_epochs": 1.0,
}


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


def source_dataset(settings: DemoSettings) -> str:
    """Return the dataset spec the sources are trained on."""
    return f"digits:classes={SOURCE_DIGITS},size={settings.image_size}"


def target_dataset(settings: DemoSettings) -> str:
    """Return the dataset spec of the target task (few labels, the rest held out)."""
    return f"digits:classes={TARGET_DIGITS},per_class={settings.per_class},seed={settings.seed},size={settings.image_size}"


def family_of(source: str) -> str:
    """Return :data:`SCRATCH` for a source with random weights (``@none``), else :data:`TRANSFER`."""
    return SCRATCH if random_weights(source) else TRANSFER


def source_checkpoint(architecture: str, settings: DemoSettings, console: Console) -> Path:
    """Return the backbone weights of ``architecture`` trained on the source digits, training it if needed.

    The training is a one-trial search over a fixed recipe (:data:`SOURCE_RECIPE`) in
    ``CACHE_DIR/<architecture>-source``; running the demo again resumes that finished search,
    and a search with another recipe replaces it.

    :returns: the weights file of its best model (``.../best/model.safetensors``).
    :raises AutoMLTransferError: the cache folder cannot be written, or a bad device.
    """
    run_dir = Path(settings.cache_dir) / f"{architecture}-source"
    space = {
        "source": f"timm:{architecture}@{NO_WEIGHTS}",
        "image_size": settings.image_size,
        "epochs": settings.source_epochs,
        **SOURCE_RECIPE,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    space_file = run_dir / SPACE_FILE
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    cached = (run_dir / BEST_LINK / WEIGHTS_FILE).is_file()
    # The source's one-trial leaderboard would only repeat the line printed below.
    with console.status(f"{architecture}: training on digits {SOURCE_DIGITS}"), redirect_stdout(io.StringIO()):
        summary = TransferSearch(
            dataset=source_dataset(settings),
            space=str(space_file),
            trials=1,
            run_dir=run_dir,
            study=f"{architecture}-source",
            device=settings.device,
            seed=settings.seed,
            val_fraction=0.2,
            force_new=True,
            quiet=True,
        ).run()
    what = "cached" if cached else "trained"
    console.print(
        f"{architecture}: {what} {run_dir / BEST_LINK} (validation accuracy on digits {SOURCE_DIGITS}: "
        f"{summary['best_value']:.1%})",
        highlight=False,
    )
    return run_dir / BEST_LINK / WEIGHTS_FILE


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
            spec = SourceSpec(spec.plugin, spec.model, os.path.relpath(spec.weights_file, os.path.abspath(path.parent)))
        written.append(str(spec))
    space = {
        "source": written,
        "image_size": settings.image_size,
        "freeze_depth": [0.0, 0.5, 1.0],
        "lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
        "weight_decay": {"low": 1.0e-3, "high": 0.1, "log": True},
        "l2sp": [0.0, 0.01, 0.1],
        "head": "linear",
        "epochs": settings.target_epochs,
        "batch_size": 16,
        # Everything else (light augmentation, no label smoothing, at least 200 steps, patience 5,
        # the start points) keeps the defaults bench/search_quality.py chose.
    }
    header = f"# Written by `automl-transfer demo`; the weight files were trained on digits {SOURCE_DIGITS}.\n"
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
    families = {
        TRANSFER: (run_dir, [f"timm:{name}@{os.path.abspath(path)}" for name, path in checkpoints.items()]),
        SCRATCH: (run_dir / SCRATCH_DIR, [f"timm:{name}@{NO_WEIGHTS}" for name in checkpoints]),
    }
    console.rule(f"2/5  Search: digits {TARGET_DIGITS}, {settings.per_class} labelled images per digit")
    transfer_dir, transfer_sources = families[TRANSFER]
    space = write_space(transfer_dir / SPACE_FILE, transfer_sources, settings)
    console.print(f"search space: {space}", highlight=False)
    run_search(space, transfer_dir, "demo", settings)
    console.rule("3/5  Baseline: the same search from random weights")
    scratch_dir, scratch_sources = families[SCRATCH]
    run_search(write_space(scratch_dir / SPACE_FILE, scratch_sources, settings), scratch_dir, "demo-scratch", settings)

    console.rule("4/5  Transfer or training from scratch? The saved models on the held-out test set")
    results = {
        family: score_on_test(folder, settings) for family, (folder, _) in families.items() if (folder / BEST_LINK).exists()
    }
    for family, result in results.items():
        params = result.params
        console.print(
            f"{family}: trial {result.trial} ({_short(params['source'])}, freeze_depth {params['freeze_depth']}, "
            f"lr {params['lr']:.3g}), trained again on every labelled image: test accuracy {result.accuracy:.1%}",
            highlight=False,
        )
    transfer_won, sentence = verdict(results)
    console.print(sentence, style="bold", highlight=False)

    console.rule(f"5/5  Predict: the transfer model on held-out images ({run_dir / 'best'})")
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


def _short(source: str) -> str:
    """Show a source's weight file by its name only: ``timm:test_resnet@test_resnet-source.safetensors``."""
    spec = SourceSpec.parse(source)
    return str(SourceSpec(spec.plugin, spec.model, spec.weights_file.name)) if spec.weights_file else source
