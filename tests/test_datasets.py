"""Dataset loading, checking, decoding, splitting and caching, on real image files made in tmp."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl_transfer.contract.components import ImageDataset
from automl_transfer.contract.options import parse_options, positive_int
from automl_transfer.data import datasets as datasets_module
from automl_transfer.data import images as images_module
from automl_transfer.data.datasets import dataset_fingerprint, load_dataset
from automl_transfer.data.image_files import image_extensions
from automl_transfer.data.images import read_image, resize_to_tensor
from automl_transfer.data.prepare import prepare_data, stratified_split
from automl_transfer.errors import DatasetError, PluginError, UnknownComponentError
from automl_transfer.plugin import hookimpl
from automl_transfer.registry import register_plugin, unregister_plugin


def save_image(path: Path, mode: str = "RGB", value: int | tuple = 128, size: tuple[int, int] = (12, 10)) -> Path:
    """Write a flat image of ``mode`` and pixel ``value`` at ``path``, format from the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        image = Image.new("RGB", size, value).quantize(colors=4)
    else:
        image = Image.new(mode, size, value)
    image.save(path)
    return path


def make_folder(root: Path, classes: dict[str, int]) -> Path:
    """Make ``root/<class>/<i>.png`` with ``classes[class]`` RGB images each, one colour per class."""
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            save_image(root / name / f"{number:03d}.png", value=(40 * index, 200 - 40 * index, 90))
    return root


def test_imagefolder_reads_every_mode_and_ignores_the_rest(tmp_path):
    root = tmp_path / "pets"
    save_image(root / "cat" / "grey.png", "L", 100)
    save_image(root / "cat" / "clear.png", "RGBA", (0, 0, 0, 0))
    save_image(root / "cat" / "palette.png", "P", (10, 200, 30))
    save_image(root / "cat" / "deep" / "photo.JPG", "RGB", (250, 10, 10))
    save_image(root / "dog" / "sixteen.png", "I;16", 65535)
    save_image(root / "dog" / "solid.webp", "RGBA", (0, 0, 255, 255))
    save_image(root / "dog" / ".hidden.png", "RGB", 5)
    (root / "dog" / "notes.txt").write_text("not an image")
    save_image(root / ".thumbnails" / "x.png", "RGB", 5)
    save_image(root / "stray.png", "RGB", 5)

    dataset = load_dataset(f"imagefolder:{root}")

    assert dataset.class_names == ["cat", "dog"]
    assert dataset.val is None and dataset.test is None
    by_name = {Path(item).name: label for item, label in dataset.train}
    assert by_name == {"clear.png": 0, "grey.png": 0, "palette.png": 0, "photo.JPG": 0,
                       "sixteen.png": 1, "solid.webp": 1}
    colours = {Path(item).name: tuple(read_image(item).getpixel((3, 3))) for item, _ in dataset.train}
    assert colours["grey.png"] == (100, 100, 100)
    assert colours["clear.png"] == (255, 255, 255)
    assert colours["sixteen.png"] == (255, 255, 255)
    assert colours["solid.webp"][2] > 240 and colours["solid.webp"][0] < 15
    assert max(abs(a - b) for a, b in zip(colours["palette.png"], (10, 200, 30))) < 40
    assert read_image(Image.new("LA", (4, 4), (0, 0))).mode == "RGB"

    prepared = prepare_data(dataset, 8)
    assert prepared.train.images.dtype == torch.uint8
    assert prepared.train.images.shape[1:] == (3, 8, 8)
    assert len(prepared.train) + len(prepared.val) == 6
    assert sorted(prepared.val.labels.tolist()) == [0, 1]


def test_image_extensions_come_from_pil():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".gif"} <= image_extensions()
    assert not {".txt", ".csv", ".pdf", ".eps", ".json"} & image_extensions()


def test_a_folder_of_common_formats_is_listed_without_loading_every_pillow_plugin(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    save_image(root / "b" / "photo.jpg")
    (root / "a" / "scan.tif").write_bytes(b"")  # listed by name: the rarer plugins load for it alone
    listing = ("import sys; from automl_transfer.data.datasets import load_dataset; "
               "dataset = load_dataset(sys.argv[1]); print(len(dataset.train), 'PIL.WebPImagePlugin' in sys.modules)")

    def listed(folder: Path) -> str:
        return subprocess.run([sys.executable, "-c", listing, f"imagefolder:{folder}"], capture_output=True, text=True,
                              check=True, timeout=120).stdout.split()

    assert listed(root) == ["6", "True"]
    (root / "a" / "scan.tif").unlink()
    assert listed(root) == ["5", "False"]


def test_imagefolder_split_layout(tmp_path):
    make_folder(tmp_path / "data" / "Train", {"a": 3, "b": 3})
    make_folder(tmp_path / "data" / "validation", {"a": 1, "b": 2})
    make_folder(tmp_path / "data" / "test", {"b": 2})
    (tmp_path / "data" / "validation" / "a" / "extra").mkdir()

    dataset = load_dataset(f"imagefolder:{tmp_path / 'data'}")
    prepared = prepare_data(dataset, 8)

    assert dataset.class_names == ["a", "b"]
    assert (len(prepared.train), len(prepared.val), len(prepared.test)) == (6, 3, 2)
    assert prepared.test.labels.tolist() == [1, 1]


def test_imagefolder_split_layout_errors(tmp_path):
    make_folder(tmp_path / "two" / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "two" / "val", {"a": 1})
    make_folder(tmp_path / "two" / "valid", {"b": 1})
    with pytest.raises(DatasetError, match="both val/ and valid/"):
        load_dataset(f"imagefolder:{tmp_path / 'two'}")

    make_folder(tmp_path / "extra" / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "extra" / "val", {"a": 1, "zebra": 1})
    with pytest.raises(DatasetError, match="zebra.* training folder"):
        load_dataset(f"imagefolder:{tmp_path / 'extra'}")


@pytest.mark.parametrize(
    ("classes", "message"),
    [({"only": 3}, r"at least 2 classes \(found only \['only'\]\)"),
     ({"a": 2, "empty": 0}, r"class folder .*empty holds no images"),
     ({"a": 2, " ": 2}, r"class names \[' '\] are empty or blank; give every class a visible name")],
)
def test_imagefolder_rejects_bad_class_folders(tmp_path, classes, message):
    root = make_folder(tmp_path / "data", classes)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"imagefolder:{root}")


def test_links_are_followed_to_real_folders_and_each_image_counted_once(tmp_path):
    pool = make_folder(tmp_path / "pool", {"cats": 3, "dogs": 2})
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "from-pool").symlink_to(pool / "cats")
    (root / "cat" / "again").symlink_to(pool / "cats")  # a second link to one folder of the class adds nothing
    (root / "dog").symlink_to(pool / "dogs")
    dataset = load_dataset(f"imagefolder:{root}")
    assert dataset.class_names == ["cat", "dog"]
    assert np.bincount([label for _, label in dataset.train]).tolist() == [3, 2]


def test_a_link_back_to_a_containing_folder_or_a_second_path_to_an_image_is_refused(tmp_path):
    root = make_folder(tmp_path / "data", {"elephant": 2, "zebra": 2})
    (root / "elephant" / "deep").mkdir()
    (root / "elephant" / "deep" / "up").symlink_to("../..")  # back to elephant/: the walk would loop
    with pytest.raises(DatasetError, match="a folder that contains it"):
        load_dataset(f"imagefolder:{root}")
    (root / "elephant" / "deep" / "up").unlink()
    (root / "elephant" / "deep" / "zebra.png").symlink_to(root / "zebra" / "000.png")
    with pytest.raises(DatasetError, match="are the same image file"):
        load_dataset(f"imagefolder:{root}")


def test_images_that_would_not_fit_in_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    import automl_transfer.data.memory as memory_module
    import automl_transfer.data.prepare as prepare_module

    dataset = load_dataset(f"imagefolder:{make_folder(tmp_path / 'data', {'a': 3, 'b': 3})}")
    monkeypatch.setattr(memory_module, "available_memory", lambda: 2**20)
    monkeypatch.setattr(prepare_module, "decode_images", lambda *args: pytest.fail("decoded anyway"))
    with pytest.raises(DatasetError, match=r"its 6 images decoded at 512x512 pixels need 4.5 MiB of memory, more than "
                                           r"the 1.0 MiB available; lower image_size"):
        prepare_data(dataset, 512)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """Write a tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's disguise)."""
    save_image(path, size=(4, 4))
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_refused_in_a_sentence_that_ends_once(tmp_path):
    bomb = png_claiming_size(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(DatasetError) as caught:
        read_image(bomb)
    message = str(caught.value)
    assert "decompression bomb" in message and ".." not in message
    assert message.endswith("DOS attack. Fix or delete the file, or pass --skip-bad-images")


def test_a_large_image_gets_one_warning_line_of_ours_not_pillows_raw_warning(tmp_path):
    image = save_image(tmp_path / "large.png", size=(12, 12))
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 100  # 144 pixels: large, not yet a bomb\n"
            "from automl_transfer.data.images import read_image; read_image(sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {image} is a very large image (12 x 12 pixels); decoding it needs about 1 MB"
    ]


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nowhere'} does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="imagefolder:path/to/images"):
        load_dataset("imagefolder")


def test_corrupt_image_fails_or_is_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    broken = root / "b" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    dataset = load_dataset(f"imagefolder:{root}")

    with pytest.raises(DatasetError, match=f"cannot read image {broken}.*--skip-bad-images"):
        prepare_data(dataset, 8)

    prepared = prepare_data(dataset, 8, skip_bad_images=True)
    assert prepared.n_skipped == 1
    assert len(prepared.train) + len(prepared.val) == 8


def test_skipping_every_image_of_a_class_is_an_error(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"garbage")
    dataset = load_dataset(f"imagefolder:{root}")
    with pytest.raises(DatasetError, match=r"class\(es\) \['b'\] have no training images left"):
        prepare_data(dataset, 8, skip_bad_images=True)


def test_csv_manifest_with_splits(tmp_path):
    make_folder(tmp_path / "img", {"cat": 3, "dog": 3})
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "\ufeffPath,Label,split,notes\n"
        "img/cat/000.png,cat,train,x\n"
        "img/cat/001.png,cat,,\n"
        "img/dog/000.png,dog,TRAIN,\n"
        "img/dog/001.png,dog,train,\n"
        "img/cat/002.png,cat,val,\n"
        "img/dog/002.png,dog,test,\n"
        ",,,\n"
    )
    dataset = load_dataset(f"csv:{manifest}")
    assert dataset.class_names == ["cat", "dog"]
    assert [label for _, label in dataset.train] == [0, 0, 1, 1]
    assert dataset.val == [(tmp_path / "img" / "cat" / "002.png", 0)]
    assert dataset.test == [(tmp_path / "img" / "dog" / "002.png", 1)]


def test_csv_numeric_labels_sort_as_numbers(tmp_path):
    make_folder(tmp_path, {"x": 3})
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nx/000.png,10\nx/001.png,2\nx/002.png,1\n")
    assert load_dataset(f"csv:{manifest}").class_names == ["1", "2", "10"]


def test_csv_row_without_image_names_line_and_path(tmp_path):
    make_folder(tmp_path, {"cat": 1, "dog": 1})
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\ncat/000.png,cat\ngone.png,dog\nalso_gone.png,dog\ndog/000.png,dog\n")
    with pytest.raises(DatasetError, match=f"line 3: image {tmp_path / 'gone.png'} does not exist; 1 more"):
        load_dataset(f"csv:{manifest}")


@pytest.mark.parametrize(
    ("text", "message"),
    [("file,label\na.png,x\n", r"missing \['path'\]"),
     ("path,label,split\ncat/000.png,cat,holdout\n", "line 2: split 'holdout'"),
     ("path,label\ncat/000.png,\n", "line 2: every row needs both"),
     ("path,label,split\ncat/000.png,cat,train\ndog/000.png,dog,val\n", "line 3: label 'dog' has no training rows")],
)
def test_csv_manifest_errors(tmp_path, text, message):
    make_folder(tmp_path, {"cat": 1, "dog": 1})
    manifest = tmp_path / "labels.csv"
    manifest.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{manifest}")


def test_digits_selects_classes_and_holds_out_the_rest():
    source = load_dataset("digits:classes=0-4")
    target = load_dataset("digits:classes=5-9,per_class=10,seed=0")
    again = load_dataset("digits:classes=5-9,per_class=10,seed=0")
    reseeded = load_dataset("digits:classes=5-9,per_class=10,seed=1")

    assert source.class_names == ["0", "1", "2", "3", "4"] and source.test is None
    assert target.class_names == ["5", "6", "7", "8", "9"]
    assert np.bincount([label for _, label in target.train]).tolist() == [10] * 5
    assert len(target.train) + len(target.test) == 1797 - len(source.train)
    assert target.train[0][0].size == (32, 32)
    assert dataset_fingerprint(target) == dataset_fingerprint(again)
    assert dataset_fingerprint(target) != dataset_fingerprint(reseeded)
    assert load_dataset("digits:classes=0,2,7-8,size=16").class_names == ["0", "2", "7", "8"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("digits:colour=red", "unknown option 'colour'; valid options are classes, per_class, seed, size"),
     ("digits:classes=3-1", "classes='3-1' is not valid"),
     ("digits:classes=4", "selects 1 digit"),
     ("digits:per_class=0", "per_class='0' is not valid: must be at least 1"),
     ("digits:per_class=500", "leaves no test images"),
     ("synthetic:classes=1", "at least 2 classes"),
     ("synthetic:size=big", "size='big' is not valid")],
)
def test_option_errors(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetError, match="pip install scikit-learn"):
        load_dataset("digits")


def test_synthetic_is_deterministic_and_sized():
    dataset = load_dataset("synthetic:classes=3,per_class=4,test=2,size=20,seed=5")
    assert dataset.class_names == ["class_0", "class_1", "class_2"]
    assert (len(dataset.train), len(dataset.test)) == (12, 6)
    assert dataset.train[0][0].size == (20, 20)
    same = load_dataset("synthetic:classes=3,per_class=4,test=2,size=20,seed=5")
    reseeded = load_dataset("synthetic:classes=3,per_class=4,test=2,size=20,seed=6")
    assert dataset_fingerprint(dataset) == dataset_fingerprint(same)
    assert dataset_fingerprint(dataset) != dataset_fingerprint(reseeded)


def test_parse_options_lets_values_hold_commas():
    options = {"classes": str, "per_class": positive_int}
    assert parse_options("classes=0,2,4,per_class=10", options, "p") == {"classes": "0,2,4", "per_class": 10}
    assert parse_options(None, options, "p") == {}
    with pytest.raises(DatasetError, match="expected key=value"):
        parse_options("10", options, "p")
    with pytest.raises(DatasetError, match="given twice"):
        parse_options("per_class=1,per_class=2", options, "p")


def test_stratified_split_keeps_every_class_in_validation():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 2 + [3] * 1)
    train, val = stratified_split(labels, 0.2, seed=0)

    assert sorted(train.tolist() + val.tolist()) == list(range(16))
    assert np.bincount(labels[val].numpy(), minlength=4).tolist() == [2, 1, 1, 0]
    assert torch.equal(val, stratified_split(labels, 0.2, seed=0)[1])
    assert any(not torch.equal(val, stratified_split(labels, 0.2, seed=seed)[1]) for seed in range(1, 5))


def test_prepared_split_is_seeded(tmp_path):
    dataset = load_dataset("synthetic:classes=2,per_class=10,size=8")
    first = prepare_data(dataset, 8, val_fraction=0.3, seed=3)
    second = prepare_data(dataset, 8, val_fraction=0.3, seed=3)
    assert torch.equal(first.val.images, second.val.images)
    assert first.val.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_data(dataset, 8, val_fraction=1.0)


def test_cache_is_written_and_read_instead_of_decoding(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    dataset = load_dataset(f"imagefolder:{root}")
    cache_dir = tmp_path / "cache"
    first = prepare_data(dataset, 8, cache_dir=cache_dir)
    cached_files = list(cache_dir.glob("*.safetensors"))
    assert len(cached_files) == 1 and not list(cache_dir.glob("*.tmp"))

    def no_decoding(item, digests=None):
        raise AssertionError(f"decoded {item} although the cache holds it")

    monkeypatch.setattr(images_module, "read_image", no_decoding)
    second = prepare_data(dataset, 8, cache_dir=cache_dir)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.val.labels, second.val.labels)
    assert second.fingerprint == first.fingerprint and second.test is None

    with pytest.raises(AssertionError, match="decoded"):
        prepare_data(dataset, 8, cache_dir=cache_dir, seed=1)


def test_unreadable_cache_file_is_decoded_again(tmp_path):
    dataset = load_dataset("synthetic:classes=2,per_class=3,size=8")
    prepare_data(dataset, 8, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.safetensors")
    cached.write_bytes(b"truncated")
    assert len(prepare_data(dataset, 8, cache_dir=tmp_path).train) == 4
    assert cached.stat().st_size > 100


def test_the_files_read_while_decoding_give_the_content_fingerprint_and_a_cache_read_reads_none(tmp_path, monkeypatch):
    dataset = load_dataset(f"imagefolder:{make_folder(tmp_path / 'data', {'a': 3, 'b': 4})}")
    by_reading = dataset_fingerprint(dataset, content=True)

    decoded = prepare_data(dataset, 8, cache_dir=tmp_path / "cache")
    cached = prepare_data(dataset, 8, cache_dir=tmp_path / "cache")

    assert len(decoded.file_digests) == 7 and cached.file_digests is None
    monkeypatch.setattr(datasets_module, "_file_identity", lambda *args: pytest.fail("a file was read again"))
    assert dataset_fingerprint(dataset, content=True, digests=decoded.file_digests) == by_reading


def test_fingerprint_follows_content_not_location(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    before = dataset_fingerprint(load_dataset(f"imagefolder:{root}"))
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, copy_function=shutil.copy2)
    assert dataset_fingerprint(load_dataset(f"imagefolder:{moved}")) == before

    save_image(root / "a" / "000.png", value=(1, 2, 3), size=(13, 10))
    assert dataset_fingerprint(load_dataset(f"imagefolder:{root}")) != before


def test_resize_to_tensor_resizes_the_shorter_side_and_crops_the_centre():
    bands = np.zeros((20, 60, 3), dtype=np.uint8)
    bands[:, :20, 0] = bands[:, 20:40, 1] = bands[:, 40:, 2] = 255
    tensor = resize_to_tensor(Image.fromarray(bands), 10, "nearest")
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.uint8
    assert tensor[1].min() == 255 and tensor[0].max() == 0 and tensor[2].max() == 0
    with pytest.raises(ValueError, match="unknown interpolation"):
        resize_to_tensor(Image.fromarray(bands), 10, "cubic")


@pytest.mark.parametrize("parallel_min_pixels", [0, 10**9], ids=["threads", "one thread"])
def test_decoding_in_threads_or_in_one_gives_the_same_images_in_order(tmp_path, monkeypatch, parallel_min_pixels):
    rng = np.random.default_rng(0)
    items = []
    for number in range(3 * images_module.DECODE_CHUNK + 5):  # several chunks, the last one short
        pixels = rng.integers(0, 256, (int(rng.integers(9, 40)), int(rng.integers(9, 40)), 3), dtype=np.uint8)
        path = tmp_path / f"{number:03d}.{'png' if number % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        items.append((path, number % 4))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items.insert(40, (broken, 1))
    monkeypatch.setattr(images_module, "PARALLEL_MIN_PIXELS", parallel_min_pixels)
    done = []

    digests = {}
    images, labels, skipped = images_module.decode_images(items, 16, "bicubic", skip_bad_images=True,
                                                          on_decoded=done.append, digests=digests)

    readable = items[:40] + items[41:]
    assert skipped == 1 and done == list(range(1, len(items) + 1))
    assert digests == {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path, _ in items}
    assert labels.tolist() == [label for _, label in readable]
    expected = torch.stack([resize_to_tensor(read_image(path), 16, "bicubic") for path, _ in readable])
    assert torch.equal(images, expected)
    with pytest.raises(DatasetError, match=f"cannot read image {broken}"):
        images_module.decode_images(items, 16, "bicubic")


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 10), (200, 0, 0)).save(path, exif=exif)
    assert read_image(path).size == (10, 30)


class _WrongLoader:
    @hookimpl
    def register_datasets(self, register):
        register("not_a_dataset", lambda location: [("image.png", 0)])


@pytest.fixture
def wrong_loader_plugin():
    register_plugin(_WrongLoader(), name="wrong-loader")
    try:
        yield
    finally:
        unregister_plugin("wrong-loader")


def test_loader_returning_the_wrong_type_is_a_plugin_error(wrong_loader_plugin):
    with pytest.raises(PluginError, match="'not_a_dataset' of plugin 'wrong-loader' returned list"):
        load_dataset("not_a_dataset:x")


def test_unknown_dataset_plugin():
    with pytest.raises(UnknownComponentError):
        load_dataset("imagefolders:data")


def test_in_memory_dataset_checks():
    image = Image.new("RGB", (4, 4))
    with pytest.raises(DatasetError, match="label 2, not 0..1"):
        prepare_data(ImageDataset(["a", "b"], [(image, 0), (image, 2)]), 4)
    with pytest.raises(DatasetError, match=r"\['b'\] have no training images"):
        prepare_data(ImageDataset(["a", "b"], [(image, 0)], val=[(image, 1)]), 4)
    with pytest.raises(DatasetError, match="the val set is empty"):
        prepare_data(ImageDataset(["a", "b"], [(image, 0), (image, 1)], val=[]), 4)


def test_single_image_classes_stay_in_training(tmp_path):
    image = Image.new("RGB", (4, 4))
    dataset = ImageDataset(["a", "b"], [(image, 0), (image, 0), (image, 0), (image, 1)])
    prepared = prepare_data(dataset, 4)
    assert prepared.train.labels.tolist() == [0, 0, 1] and prepared.val.labels.tolist() == [0]
    with pytest.raises(DatasetError, match="every class has a single image"):
        prepare_data(ImageDataset(["a", "b"], [(image, 0), (image, 1)]), 4)
