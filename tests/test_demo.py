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

from automl_transfer.demo.demo import (
    SCRATCH,
    SOURCE_ARCHITECTURES,
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
from automl_transfer import TransferSearch
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
    assert family_of("timm:test_resnet@none") == SCRATCH
    assert family_of("timm:test_resnet@NONE") == SCRATCH
    assert family_of("timm:test_resnet@.cache/demo/test_resnet-source.safetensors") == TRANSFER


def test_verdict_says_plainly_who_won():
    transfer = FamilyResult(TRANSFER, 3, {}, 0.912, 866)
    scratch = FamilyResult(SCRATCH, 1, {}, 0.635, 866)

    assert verdict({TRANSFER: transfer, SCRATCH: scratch}) == (
        True,
        "Transfer beat training from scratch on the held-out test set: 91.2% vs 63.5% accuracy (866 images).",
    )
    won, sentence = verdict({TRANSFER: scratch, SCRATCH: transfer})
    assert not won and sentence.startswith("Transfer did not beat training from scratch")
    won, sentence = verdict({SCRATCH: scratch})
    assert won is None and "no transfer configuration" in sentence


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_flag_shrinks_defaults_but_explicit_flags_win():
    settings = settings_from_args(_parse("--quick", "--trials", "5"))

    assert (settings.trials, settings.source_epochs, settings.target_epochs) == (5, 2, 2)
    assert settings_from_args(_parse()).trials == DemoSettings().trials


@pytest.mark.parametrize("argv", [("--per-class", "1"), ("--trials", "0"), ("--source-epochs", "-1")])
def test_bad_counts_are_refused_before_any_work(argv):
    with pytest.raises(AutoMLTransferError, match=argv[0]):
        settings_from_args(_parse(*argv))


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_then_as_make_demo_does_from_its_cache(tmp_path):
    settings = DemoSettings.quick(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu", quiet=True)
    output = io.StringIO()

    result = run_demo(settings, Console(file=output, width=200))

    printed = output.getvalue()
    for architecture in SOURCE_ARCHITECTURES:
        assert (tmp_path / "cache" / f"{architecture}-source" / "best" / "model.safetensors").is_file()
    assert set(result.families) == {TRANSFER, SCRATCH}
    assert result.families[SCRATCH].params["source"].endswith("@none")
    assert not result.families[TRANSFER].params["source"].endswith("@none")
    test_images = result.families[TRANSFER].test_images
    assert test_images > 800  # every image of digits 5-9 but the 6 labelled per digit
    sentence = next(line for line in printed.splitlines() if line.startswith("Transfer "))
    assert sentence.endswith(f"accuracy ({test_images} images).")
    assert ("did not beat" not in sentence) == result.transfer_won
    saved = json.loads((tmp_path / "run" / "best" / "model.json").read_text())
    assert saved["class_names"] == list("56789")
    assert result.families[TRANSFER].trial == saved["trial"] and saved["refit"] is not None  # scored what it saves
    scratch_saved = json.loads((tmp_path / "run" / "scratch" / "best" / "model.json").read_text())
    assert result.families[SCRATCH].trial == scratch_saved["trial"]
    assert len(result.predictions) == settings.samples
    assert all(truth in "56789" and label in "56789" and 0 <= score <= 1 for _, truth, label, score in result.predictions)
    assert result.summary["n_complete"] + result.summary["n_pruned"] == settings.trials

    # Again, as `make demo` runs it (a module in a fresh process): the sources come from the cache.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, "-m", "automl_transfer", "demo", "--quick", "--device", "cpu",
         "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("cached") == len(SOURCE_ARCHITECTURES)
    assert "training from scratch on the held-out test set" in " ".join(finished.stdout.split())
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
