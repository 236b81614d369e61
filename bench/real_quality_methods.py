"""The methods ``bench/search_quality.py --real`` compares on real pretrained sources.

Every method gets one few-shot task (a dataset text that ships offline: ``photos``, ``photos``
with ``split=halves``, ``digits``, at some labelled images per class and a seed) and returns
the held-out test accuracy of the model it would hand the user, with the training images it
processed and its wall seconds:

- our search over the ``lite`` preset (ImageNet EfficientNet-Lite0/1/2), a fixed number of
  trials, as a user runs it (``--space lite``), and variants of it that change one default;
- the same search with ``--cross-check 2`` (:data:`CROSS_CHECKED`): run on the finished
  search's run dir, it trains only the finalists' folds, as a search with the flag would after
  the same trials;
- random search over the same space at the same budget (no start points, no pruning);
- the fine-tune a user writes by hand on the ImageNet Lite0 weights (``bench/real_sources.py``'s
  plain fine-tune: AdamW lr 1e-3, weight decay 0.05, cosine, batch 32, every labelled image),
  at its usual 15 epochs or at as many training images as our search used.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from quality_methods import keep_the_last_epoch

from automl_transfer import TransferSearch
from automl_transfer.space.presets import PRESET_PACKAGE
from automl_transfer.training.trainer import BestEpoch

#: Trials each search gets (ours, random search and every variant).
TRIALS = 6
#: The source the hand-written fine-tune starts from: the smallest ImageNet Lite, the one a
#: CPU user picks (bench/real_sources.py: within a few points of Lite1 and Lite2 on these tasks).
HAND_SOURCE = "lite:lite0"
#: The hand-written fine-tune's usual epochs.
HAND_EPOCHS = 15

#: The row of our search followed by ``--cross-check 2 --folds 3`` (recorded with "ours").
CROSS_CHECKED = "ours, cross-check 2 x 3 folds"

#: Our search and the variants that each change one default (space changes, search options).
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "random search, no pruning": {"sampler": "random", "pruner": "none", "space": {"start": []}},
    "ours, start points at lr 1e-3": {"space": {"start": [{"freeze_depth": 0.0, "lr": 1.0e-3},
                                                          {"freeze_depth": 0.5, "lr": 1.0e-3}]}},
    "ours, every epoch kept (no early stopping; the refit trains all epochs)": {
        "space": {"patience": 0},
        "patches": [lambda: mock.patch.object(BestEpoch, "update", keep_the_last_epoch)],
    },
    "ours, no augmentation": {"space": {"augment": "none"}},
    "ours, min_steps 200 (the digits default)": {"space": {"min_steps": 200}},
    "ours, 128 px (upscaled toward the sources' 224)": {"space": {"image_size": 128}},
}


def lite_space(**changes: Any) -> dict[str, Any]:
    """The ``lite`` preset as shipped, with ``changes`` applied."""
    space = yaml.safe_load(resources.files(PRESET_PACKAGE).joinpath("lite.yaml").read_text())
    space.update(changes)
    return space


def search(dataset: str, seed: int, run_dir: Path, variant: str, space_changes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run our search in ``variant`` (see :data:`VARIANTS`) on ``dataset``; its kept model's test accuracy.

    :param space_changes: changes to every variant's space (``--quick`` shortens the trials).
    :returns: one record (``method``, ``test``: accuracy of ``best/`` on the dataset's test
        split, ``images``: training images of every trial and the refit, ``seconds``,
        ``best_trial``, ``best_source``); for "ours", a second one for :data:`CROSS_CHECKED`,
        whose images and seconds include the search's.
    """
    settings = VARIANTS[variant]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    space = lite_space(**(space_changes or {}), **settings.get("space", {}))
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space))
    options = {"dataset": dataset, "space": str(run_dir / "space.yaml"), "trials": TRIALS, "run_dir": run_dir,
               "quiet": True, "seed": seed, "device": "cpu", "sampler": settings.get("sampler", "tpe"),
               "pruner": settings.get("pruner", "hyperband")}
    with contextlib.ExitStack() as patches:
        for patch in settings.get("patches", ()):
            patches.enter_context(patch())
        records = [_timed_search(variant, options, space["image_size"])]
    if variant == "ours":
        checked = _timed_search(CROSS_CHECKED, {**options, "cross_check": 2, "folds": 3}, space["image_size"])
        checked["seconds"] += records[0]["seconds"]
        records.append(checked)
    shutil.rmtree(run_dir, ignore_errors=True)
    return records


def _timed_search(method: str, options: dict[str, Any], image_size: int) -> dict[str, Any]:
    """Run (or go on with) one search; the record of its kept model."""
    from quality_methods import trial_images

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the leaderboards: the table says it all
        search = TransferSearch(**options)
        summary = search.run()
    seconds = time.perf_counter() - start
    train_size = len(search.prepare(image_size, summary["best_params"]["interpolation"]).train)  # decoded already
    return {"method": method, "test": summary["test"]["accuracy"], "seconds": seconds,
            "images": trial_images(options["run_dir"], summary, train_size),
            "best_trial": summary["best_trial"], "best_source": summary["best_params"]["source"]}


def hand_written(dataset: str, seed: int, epochs: int = HAND_EPOCHS) -> dict[str, Any]:
    """The plain fine-tune of :data:`HAND_SOURCE` for ``epochs`` epochs; its test accuracy and compute."""
    from real_sources import plain_fine_tune

    return plain_fine_tune(HAND_SOURCE, dataset, seed, epochs)
