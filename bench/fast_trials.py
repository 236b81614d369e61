"""Fast trials: a trial's wall time at freeze depth 0, 0.5, 0.75 and 1, with and without the caches.

Every trial fine-tunes the same timm model from the same checkpoint on the same decoded
digits (train and validation splits), with the same seed, epochs and batch size, without
augmentation, through the trainer a search uses. "without" runs the whole network every
step; "with" computes the frozen layers' output once per fit
(:mod:`automl_transfer.training.frozen_prefix`), and at freeze depth 1 reads the backbone's
features from the cache an earlier trial of the source filled ("with, first" is the trial
that fills it). Runs are interleaved; medians are compared. Goals (issue 9): a freeze-1 trial
at least 20x cheaper than a freeze-0 trial; a partly frozen trial cheaper in proportion to
the frozen share of the forward pass.

Run (about 5 minutes on 2 CPU cores)::

    python bench/fast_trials.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
from common import median, publish, section_preamble, synchronize, table
from safetensors.torch import save_file

from automl_transfer.data.cache import FeatureStore
from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import PreparedData, prepare_data
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.model.sources import BackboneCache
from automl_transfer.registry import get_component, load_plugins
from automl_transfer.training.fit import TrialSettings, fit

DEPTHS = (0.0, 0.5, 0.75, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two digits, 2 epochs, 1 repeat: proves the script works")
    parser.add_argument("--model", default="test_resnet", help="timm model (default test_resnet)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default 10)")
    parser.add_argument("--repeats", type=int, help="interleaved runs of each variant (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.dataset = f"digits:classes={'0-1' if args.quick else '0-9'},size=32"
    return args


def one_trial(
    data: PreparedData,
    source: str,
    depth: float,
    variant: str,
    cache_dir: Path,
    epochs: int,
    batch_size: int = 64,
    device: torch.device = torch.device("cpu"),
) -> tuple[float, float]:
    """Fine-tune once; return ``(seconds, best validation accuracy)``. The model is built before the clock starts.

    :param variant: ``without`` (no caches), ``with`` (the frozen front once; a freeze-1 trial
        reads the features an earlier one stored) or ``with, first`` (the trial that stores them).
    """
    backbones = BackboneCache()
    torch.manual_seed(0)
    backbone = backbones.build(source)
    head = get_component("head", "linear").build(backbone.num_features, len(data.class_names))
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    frozen = freeze_backbone(backbone, depth)
    settings = TrialSettings(
        lr=3e-3, weight_decay=0.05, l2sp=0.0, epochs=epochs, batch_size=batch_size, label_smoothing=0.1,
        augment="none", seed=0, reuse_frozen=variant != "without", device=device,
    )
    store = None
    if depth == 1.0 and variant != "without":
        store = FeatureStore(cache_dir / variant, {"data": "bench", "source": source})
        if variant == "with, first":
            store.path.unlink(missing_ok=True)
    synchronize(device)
    start = time.perf_counter()
    result = fit(model, frozen, data, settings, feature_store=store)
    synchronize(device)
    return time.perf_counter() - start, result.metrics["accuracy"]


def main(argv: list[str] | None = None) -> None:
    """Time every variant at every depth, interleaved, and publish the medians."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_plugins()
    data = prepare_data(load_dataset(args.dataset), 32, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"{args.model}.safetensors"
        torch.manual_seed(0)
        save_file(timm.create_model(args.model, num_classes=0).state_dict(), checkpoint)
        source = f"timm:{args.model}@{checkpoint}"
        variants = [(depth, variant) for depth in DEPTHS for variant in ("without", "with")]
        variants.append((1.0, "with, first"))
        one_trial(data, source, 1.0, "with", Path(folder), args.epochs)  # fills the cache "with" reads; warms up
        runs: dict[tuple[float, str], list[tuple[float, float]]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for depth, variant in variants:
                runs[(depth, variant)].append(one_trial(data, source, depth, variant, Path(folder), args.epochs))
    seconds = {key: median([run[0] for run in values]) for key, values in runs.items()}
    full = seconds[(0.0, "without")]
    rows = [
        [f"{depth:g}", variant, f"{seconds[(depth, variant)]:.2f}", f"{full / seconds[(depth, variant)]:.1f}x",
         f"{median([run[1] for run in runs[(depth, variant)]]):.3f}"]
        for depth, variant in variants
    ]
    speedup = full / seconds[(1.0, "with")]
    markdown = (
        section_preamble("Fast trials: trial time by freeze depth, with and without the caches (bench/fast_trials.py)", None)
        + f"- setup: `{args.dataset}` ({len(data.train)} train / {len(data.val)} validation images, 32 px), timm "
        f"`{args.model}` from a checkpoint, {args.epochs} epochs, batch 64, no augmentation, {args.threads} thread(s); "
        f"median of {args.repeats} interleaved runs; the model is built before the clock starts\n"
        f"- result: a freeze-1 trial with a warm feature cache is **{speedup:.0f}x** cheaper than a freeze-0 trial "
        f"(goal >= 20x)\n\n"
        + table(["freeze depth", "caches", "seconds", "vs freeze 0", "val accuracy"], rows)
    )
    publish("fast-trials", markdown, args.quick, args.results)


if __name__ == "__main__":
    main()
