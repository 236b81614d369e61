"""The built wheel: the right packages, the presets, and every built-in plugin found through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN_PLUGINS = {
    "timm", "torchvision", "lite", "efficientnet-pytorch-layout", "heads", "imagefolder", "csv", "digits", "photos",
    "synthetic", "console", "regularizers", "mixing",
}
NOT_SOURCE = (".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".cache")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_dir(package: str, package_dir: dict[str, str]) -> str:
    """The directory setuptools reads ``package`` from, as ``package-dir`` maps it."""
    parts = package.split(".")
    for end in range(len(parts), 0, -1):
        mapped = package_dir.get(".".join(parts[:end]))
        if mapped is not None:
            return "/".join([mapped, *parts[end:]])
    return "/".join(parts)


def test_every_package_in_the_source_tree_is_shipped():
    setuptools = _pyproject()["tool"]["setuptools"]
    shipped = {_source_dir(package, setuptools["package-dir"]) for package in setuptools["packages"]}
    for source in ("automl_transfer", "plugins", "search_spaces"):
        for init in (ROOT / source).rglob("__init__.py"):
            directory = init.parent.relative_to(ROOT).as_posix()
            assert directory in shipped, f"{directory} is a package missing from pyproject's packages"


def test_built_ins_are_declared_as_entry_points():
    entry_points = _pyproject()["project"]["entry-points"]["automl_transfer"]
    assert set(entry_points) == BUILT_IN_PLUGINS
    assert all(target.startswith("automl_transfer_plugins.") for target in entry_points.values())


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_lists_the_built_ins(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("automl_transfer-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for preset in (ROOT / "search_spaces").glob("*.yaml"):
        assert f"automl_transfer_search_spaces/{preset.name}" in shipped
    for module in (ROOT / "plugins").glob("*.py"):
        assert f"automl_transfer_plugins/{module.name}" in shipped

    # A fresh venv that sees the dependencies already installed here (torch is gigabytes) through
    # a .pth line, but not this checkout: that directory's own .pth files (the editable install)
    # are not processed, and the wheel's copy comes first on sys.path.
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    fresh_python = fresh / "bin" / "python"
    fresh_site = Path(
        subprocess.run(
            [str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(fresh_python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
         str(wheel)],
        check=True,
        capture_output=True,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    unwanted = ("PYTHONPATH", "AUTOML_TRANSFER_DISABLE_PLUGINS")
    environment = {name: value for name, value in os.environ.items() if name not in unwanted}
    where = subprocess.run(
        [str(fresh_python), "-c", "import automl_transfer, automl_transfer_plugins; print(automl_transfer.__file__)"],
        cwd=elsewhere, env=environment, check=True, capture_output=True, text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(fresh_site)
    run = subprocess.run(
        [str(fresh / "bin" / "automl-transfer"), "plugins", "--json"],
        cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    assert listing["errors"] == []
    listed = {plugin["name"]: plugin for plugin in listing["plugins"]}
    assert BUILT_IN_PLUGINS <= set(listed)
    assert {listed[name]["distribution"] for name in BUILT_IN_PLUGINS} == {"automl-transfer"}
