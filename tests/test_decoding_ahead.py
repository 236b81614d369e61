"""Decoding a dataset in a child process while the search starts (automl_transfer.data.ahead).

The child is only forked in a process that has not imported torch, so each scenario runs in a
fresh Python process, as ``automl-transfer search`` does, and checks its outcome there against
the images ``decode_images`` gives in the same process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from automl_transfer import registry
from automl_transfer.data.cache import read_cache
from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import prepare_data

#: Every scenario starts so: the dataset of argv[1] listed, before torch is imported.
PROLOGUE = """\
import logging, os, signal, sys
from automl_transfer import registry
from automl_transfer.data.ahead import LIKELY_INTERPOLATION, DecodingAhead
from automl_transfer.data.datasets import dataset_fingerprint, dataset_splits, read_dataset

logging.basicConfig(format="%(message)s")
registry.load_plugins()
dataset = read_dataset(sys.argv[1])
fingerprint = dataset_fingerprint(dataset)
assert "torch" not in sys.modules


def decoded_here(size, interpolation, skip, digests):
    from automl_transfer.data.images import decode_images
    return {name: decode_images(items, size, interpolation, skip, None, digests)
            for name, items in dataset_splits(dataset).items()}


def same(taken, expected):
    import torch
    assert taken.keys() == expected.keys(), (taken.keys(), expected.keys())
    for name, (images, labels, skipped) in expected.items():
        assert torch.equal(taken[name][0], images) and torch.equal(taken[name][1], labels), name
        assert taken[name][2] == skipped, (name, taken[name][2], skipped)


def reaped(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False
"""


def run_fresh(scenario: str, dataset: str) -> str:
    """Run the prologue and ``scenario`` in a new Python process on ``dataset``; return its stderr."""
    code = PROLOGUE + textwrap.dedent(scenario)
    done = subprocess.run([sys.executable, "-c", code, dataset], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def mixed_folder(root: Path, bad: bool = True) -> Path:
    """A split layout of noisy PNG/JPEG images in several modes and sizes, and one corrupt file in ``train/b``.

    The noise makes every interpolation give other pixels when an image is resized.
    """
    noise = np.random.default_rng(0)
    shapes = [("RGB", (20, 14)), ("L", (16, 16)), ("RGBA", (9, 30)), ("I;16", (24, 24)), ("P", (16, 40))]
    for split, count in (("train", 5), ("val", 2), ("test", 2)):
        for label, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                mode, (width, height) = shapes[(index + label) % len(shapes)]
                if mode == "I;16":
                    image = Image.fromarray(noise.integers(0, 65536, (height, width), dtype=np.uint16))
                else:
                    image = Image.fromarray(noise.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
                    image = image.quantize(8) if mode == "P" else image.convert(mode)
                image.save(root / split / name / f"{index}.{'jpg' if mode == 'RGB' else 'png'}")
    if bad:
        (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_the_child_decodes_every_split_as_this_process_would_skipping_what_it_skips(tmp_path):
    folder = mixed_folder(tmp_path / "data")
    log = run_fresh("""
        ahead = DecodingAhead.start(dataset, fingerprint, 16, skip_bad_images=True)
        assert ahead is not None and ahead.pid is not None
        pid, seen, digests = ahead.pid, [], {}
        taken = ahead.take(fingerprint, 16, LIKELY_INTERPOLATION, True, lambda done, total: seen.append((done, total)), digests)
        assert reaped(pid) and ahead.pid is None
        assert seen[0] == (0, 19) and seen[-1] == (19, 19), seen
        expected_digests = {}
        same(taken, decoded_here(16, LIKELY_INTERPOLATION, True, expected_digests))
        assert digests == expected_digests and len(digests) == 19
        assert ahead.take(fingerprint, 16, LIKELY_INTERPOLATION, True) is None  # once only
    """, f"imagefolder:{folder}")
    assert log.count(f"warning: skipped unreadable image {folder / 'train' / 'b' / 'broken.png'}: ") == 2  # child's, ours


def test_another_interpolation_drops_resized_images_but_keeps_images_that_needed_no_resizing(tmp_path):
    mixed = mixed_folder(tmp_path / "mixed", bad=False)
    run_fresh("""
        ahead = DecodingAhead.start(dataset, fingerprint, 16)
        pid = ahead.pid
        assert ahead.take(fingerprint, 16, "bilinear", False) is None
        assert reaped(pid)
    """, f"imagefolder:{mixed}")
    exact = tmp_path / "exact"
    for label in ("a", "b"):
        (exact / label).mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (16, 16 + 8 * index), (50 * index, 90, 200 if label == "a" else 0)).save(exact / label / f"{index}.png")
    run_fresh("""
        ahead = DecodingAhead.start(dataset, fingerprint, 16)
        same(ahead.take(fingerprint, 16, "bilinear", False), decoded_here(16, "bilinear", False, None))
    """, f"imagefolder:{exact}")


def test_an_unreadable_image_other_settings_or_a_dead_child_leave_the_decoding_to_the_caller(tmp_path):
    folder = mixed_folder(tmp_path / "data")
    run_fresh("""
        ahead = DecodingAhead.start(dataset, fingerprint, 16)  # not skipping: the child gives up
        pid = ahead.pid
        assert ahead.take(fingerprint, 16, LIKELY_INTERPOLATION, False) is None and reaped(pid)

        ahead = DecodingAhead.start(dataset, fingerprint, 16, skip_bad_images=True)
        pid = ahead.pid
        assert ahead.take(fingerprint, 24, LIKELY_INTERPOLATION, True) is None and reaped(pid)
        ahead = DecodingAhead.start(dataset, fingerprint, 16, skip_bad_images=True)
        assert ahead.take("another dataset", 16, LIKELY_INTERPOLATION, True) is None

        ahead = DecodingAhead.start(dataset, fingerprint, 16, skip_bad_images=True)
        pid = ahead.pid
        os.kill(pid, signal.SIGKILL)
        assert ahead.take(fingerprint, 16, LIKELY_INTERPOLATION, True) is None and reaped(pid)

        with DecodingAhead.start(dataset, fingerprint, 16, skip_bad_images=True) as ahead:
            pid = ahead.pid
        assert reaped(pid)  # closed without taking: stopped and waited for

        import torch
        assert DecodingAhead.start(dataset, fingerprint, 16) is None  # torch loaded: nothing left to overlap
    """, f"imagefolder:{folder}")


def test_a_search_takes_the_images_decoded_ahead_and_caches_what_it_would_have_decoded(tmp_path):
    data = tmp_path / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for index in range(8):
            Image.new("RGB", (16, 16), (30 * index, 200 if label == "a" else 20, 90)).save(data / label / f"{index}.png")
    space = tmp_path / "space.yaml"
    space.write_text("source: timm:test_resnet@none\nhead: linear\nlr: 0.01\nepochs: 1\nbatch_size: 8\nimage_size: 16\n"
                     "start: []\n")
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "automl_transfer", "search", "--dataset", f"imagefolder:{data}",
                           "--space", str(space), "--trials", "1", "--run-dir", str(run_dir), "--quiet", "--no-refit",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    registry.load_plugins()
    (cache,) = (run_dir / "cache").glob("images-*.safetensors")
    splits, info = read_cache(cache)
    expected = prepare_data(load_dataset(f"imagefolder:{data}"), 16, interpolation="bilinear")
    for name, tensors in (("train", expected.train), ("val", expected.val)):
        assert torch.equal(splits[name][0], tensors.images) and torch.equal(splits[name][1], tensors.labels)
    assert splits["test"] is None and info["n_skipped"] == 0
