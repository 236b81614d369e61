"""The README is part of the product: its Python example runs and every hook it promises exists."""

from __future__ import annotations

import inspect
import re
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
