"""The report's plots: titled in the search's terms, offline, and drawn by a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main
from automl_transfer.reporting.plots import importance_table

SPACE = """
source: [timm:test_resnet@none, timm:test_efficientnet@none]
lr: {low: 1.0e-3, high: 3.0e-2, log: true}
head: linear
epochs: 2
batch_size: 8
image_size: 16
"""
DATASET = "digits:classes=0-2,per_class=6,size=16"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A ten-trial search over two sources (enough for importances), scored on the digits' test split, then `report`."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "space.yaml").write_text(SPACE)
    TransferSearch(dataset=DATASET, space=str(folder / "space.yaml"), trials=10, run_dir=folder / "run", quiet=True,
                   pruner="none").run()  # ten complete trials: importances are shown from ten on
    assert main(["report", str(folder / "run")]) == 0
    return folder / "run"


def plotly_spec(path: Path) -> dict:
    """The figure a report file draws: the JSON plotly is called with."""
    html = path.read_text()
    match = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{", html, re.S)
    assert match, f"no plot in {path}"
    return {"data": json.loads(match.group(1)), "layout": json.loads(match.group(2))}


@pytest.mark.slow
def test_the_report_writes_offline_plots_titled_with_the_metric_epoch_trial_and_source(report: Path) -> None:
    folder = report / "report"
    assert sorted(path.name for path in folder.iterdir()) == [
        "confusion.html", "epochs.html", "history.html", "importances.html", "plotly.min.js"
    ]
    assert all(re.search(r'<script[^>]* src="plotly.min.js"', path.read_text()) for path in folder.glob("*.html"))
    epochs = plotly_spec(folder / "epochs.html")
    assert epochs["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert epochs["layout"]["yaxis"]["title"]["text"] == "validation accuracy"
    names = [trace["name"] for trace in epochs["data"]]
    assert len(names) == 10 and all(re.fullmatch(r"trial \d · timm:test_(resnet|efficientnet)@none( \(pruned\))?", n) for n in names)
    history = plotly_spec(folder / "history.html")
    assert (history["layout"]["xaxis"]["title"]["text"], history["layout"]["yaxis"]["title"]["text"]) == (
        "trial", "validation accuracy"
    )
    summary = json.loads((report / "summary.json").read_text())
    confusion = plotly_spec(folder / "confusion.html")
    assert confusion["data"][0]["z"] == summary["test"]["confusion_matrix"]
    assert confusion["layout"]["xaxis"]["title"]["text"] == "predicted class"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package chromium; .ci/run installs it)")
def test_headless_chromium_draws_every_plot_of_the_report(report: Path) -> None:
    expected = {
        "epochs.html": ["epoch", "validation accuracy", "trial 0 · timm:test_"],
        "history.html": ["trial", "validation accuracy", "best so far"],
        "importances.html": ["parameter", "importance for validation accuracy (sums to 1)"],
        "confusion.html": ["predicted class", "true class"],
    }
    for name, texts in expected.items():
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
             (report / "report" / name).as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
        assert 'class="main-svg"' in dom, f"{name}: plotly drew nothing"
        drawn = re.findall(r'class="(?:xtitle|ytitle|legendtext)"[^>]*>([^<]*)<', dom)
        for text in texts:
            assert any(text in shown for shown in drawn), f"{name}: {text!r} not drawn; drawn: {drawn}"
    assert 'class="hm"' in dom  # the confusion matrix's heatmap layer


def importance_study(trials: int, varying: tuple[str, ...]) -> optuna.Study:
    """A study of ``trials`` complete trials over source, lr and head, where only ``varying`` change."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    distributions = {"source": CategoricalDistribution(["timm:a", "timm:b"]), "lr": FloatDistribution(1e-4, 1.0),
                     "head": CategoricalDistribution(["linear", "mlp"])}
    for number in range(trials):
        params = {"source": ["timm:a", "timm:b"][number % 2] if "source" in varying else "timm:a",
                  "lr": 0.01 * (number + 1) if "lr" in varying else 0.01, "head": "linear"}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5 + 0.01 * number * (number % 2), params=params,
                                     distributions=distributions))
    return study


def test_importances_are_shown_only_for_parameters_that_varied_and_from_ten_trials_on() -> None:
    assert importance_table(importance_study(2, ("source",))) is None  # two trials say nothing
    assert importance_table(importance_study(9, ("source", "lr"))) is None
    table = importance_table(importance_study(10, ("source", "lr")))
    assert table is not None and sorted(table.columns[0].cells) == ["lr", "source"]  # head never varied
