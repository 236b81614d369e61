"""The README is part of the product: its Python example runs and every hook it promises exists."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from automl_transfer.contract import hookspecs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    (example,) = python_blocks("Python API")
    exec(compile(example, "README.md", "exec"), {})
    first_line, second_line = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "timm:test_resnet@none" in first_line
    assert second_line.split()[0] in {"0", "1", "2"}
    assert (tmp_path / "runs" / "api-example" / "best" / "model.json").is_file()


def test_every_hookspec_is_documented_in_code_and_readme() -> None:
    hooks = [name for name, value in vars(hookspecs).items() if hasattr(value, "automl_transfer_spec")]
    assert {"register_backbones", "register_heads", "register_datasets", "epoch_end"} <= set(hooks)
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert ":param" in doc, f"hookspec {name} has no :param: docs"
        assert f"`{name}" in README, f"hookspec {name} is not in the README's hook table"


def test_the_demo_paragraph_quotes_what_the_demo_prints_with_its_own_settings() -> None:
    """The README's demo sentence is the one ``verdict`` prints, for the demo's real test set and settings.

    The accuracies are those of a real ``make demo`` run, recorded by hand; everything else in the
    sentence comes from the code, so a change to the demo's wording, data or defaults fails here.
    """
    from automl_transfer.data.datasets import load_dataset
    from automl_transfer.demo.demo import SCRATCH, TRANSFER, FamilyResult, target_dataset, verdict
    from automl_transfer.demo.settings import DemoSettings
    from automl_transfer.registry import load_plugins

    paragraph = README.split("**What the demo does**", 1)[1].split("\n\n", 1)[0]
    quoted = re.search(r"printed \"(.+?)\"", paragraph, flags=re.S).group(1).replace("\n", " ")
    transfer, scratch = (float(number) / 100 for number in re.findall(r"(\d+\.\d)%", quoted))
    settings = DemoSettings()
    load_plugins()
    test_images = len(load_dataset(target_dataset(settings)).test)
    families = {TRANSFER: FamilyResult(TRANSFER, 0, {}, transfer, test_images),
                SCRATCH: FamilyResult(SCRATCH, 0, {}, scratch, test_images)}
    assert quoted == verdict(families)[1]
    assert f"{test_images} held-out test images" in paragraph.replace("\n", " ")
    words = {5: "five", 6: "six", 8: "eight", 10: "ten"}
    assert f"only {words.get(settings.per_class, settings.per_class)} labelled crops per photograph" in paragraph.replace("\n", " ")
    assert f"{settings.trials} trials" in paragraph.replace("\n", " ")


def quick_start_commands() -> list[list[str]]:
    """The ``automl-transfer`` commands of the Quick start's "On your own data" block, split into arguments."""
    body = README.split("On your own data", 1)[1]
    block = re.findall(r"```sh\n(.*?)```", body, flags=re.S)[0]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("automl-transfer ")]


def test_the_quick_start_runs_as_written_offline_with_weights_none(tmp_path: Path) -> None:
    from PIL import Image
    from search_processes import CLI

    commands = quick_start_commands()
    assert [command[1] for command in commands] == ["search", "predict", "evaluate", "report"]
    for folder in ("data/pets", "data/pets-test"):
        for label, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
            (tmp_path / folder / label).mkdir(parents=True)
            for number in range(6):
                Image.new("RGB", (20, 20), (colour[0], 10 * number, colour[2])).save(tmp_path / folder / label / f"{number}.png")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (20, 20), (200, 0, 40)).save(tmp_path / "photos" / "1.png")
    (tmp_path / "tiny.yaml").write_text("source: [timm:test_resnet]\nepochs: 1\nbatch_size: 4\nimage_size: 16\n"
                                        "min_steps: 0\nstart: []\n")
    search, *others = commands
    # The offline path the README recommends: the same command with --weights none (the preset swapped
    # for a tiny space of the same kind and one trial, so that the test runs in seconds).
    search = [{"small": "tiny.yaml", "20": "1"}.get(argument, argument) for argument in search]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for command in [[*search, "--weights", "none", "--device", "cpu"], *others]:
        result = subprocess.run([*CLI, *command[1:]], cwd=tmp_path, env=environment, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (command, result.stderr)


def test_the_search_space_key_table_is_the_trial_settings_table() -> None:
    """The README's table of keys is generated from the one declaration of the trial settings."""
    from automl_transfer.contract.trial_settings import readme_table

    body = README.split("## Search-space format\n", 1)[1]
    start = body.index("| Key | Values |")
    assert body[start:body.index("\n\n", start)] == readme_table(), (
        "the README's key table differs from automl_transfer/contract/trial_settings.py; paste readme_table()'s text"
    )
