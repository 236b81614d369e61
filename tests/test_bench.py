"""The benchmarks: each script runs in its quick mode on the CPU and writes its section of a results file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

sys.path.insert(0, str(BENCH))
from common import minimal_fit, write_section  # noqa: E402

sys.path.remove(str(BENCH))


def _run_bench(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``bench/<script> --quick ARGS``; check that it left the recorded results alone."""
    recorded = BENCH / "RESULTS.md"
    before = recorded.read_text() if recorded.exists() else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (recorded.read_text() if recorded.exists() else None) == before
    return finished


def _section(results: Path, name: str) -> str:
    match = re.search(rf"<!-- bench:{name} -->\n(.*?)\n<!-- /bench:{name} -->", results.read_text(), re.DOTALL)
    assert match, f"no {name} section in {results}"
    return match.group(1)


def test_write_section_appends_then_replaces_in_place(tmp_path):
    results = tmp_path / "RESULTS.md"

    write_section("a", "## A\nfirst", results)
    write_section("b", "## B\nsecond", results)
    write_section("a", "## A\nthird", results)

    text = results.read_text()
    assert _section(results, "a") == "## A\nthird"
    assert _section(results, "b") == "## B\nsecond"
    assert text.index("bench:a") < text.index("bench:b")
    assert "first" not in text


def test_minimal_fit_learns_a_separable_problem():
    import torch
    from torch import nn

    torch.manual_seed(0)
    images = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    labels = torch.arange(64) % 2
    images[labels == 1] = 255
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    epochs = []

    metrics = minimal_fit(
        model, (images, labels), (images, labels), mean=(0.5,) * 3, std=(0.5,) * 3, epochs=3, batch_size=16,
        lr=0.05, weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.5, device=torch.device("cpu"),
        on_epoch=lambda epoch, metrics: epochs.append(epoch),
    )

    assert epochs == [1, 2, 3]
    assert metrics["accuracy"] == 1.0


@pytest.mark.slow
def test_gpu_bench_quick_runs_on_the_cpu(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("gpu.py", "--peak-tflops", "1", "--results", str(results), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "gpu")
    assert "command: `python" in section and "--quick" in section
    row = next(line for line in section.splitlines() if line.startswith("| test_resnet"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    trial, minimal, ratio = float(cells[2]), float(cells[3]), float(cells[4])
    assert trial > 0 and minimal > 0 and ratio == pytest.approx(trial / minimal, rel=0.01)
    assert cells[6].endswith("%") and cells[7].endswith("%")


@pytest.mark.slow
def test_overhead_bench_quick_runs_both_comparisons(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("overhead.py", "--results", str(results), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "overhead-cpu")
    ratios = [float(value) for value in re.findall(r"\*\*([0-9.]+)\*\*", section)]
    assert len(ratios) == 2 and all(ratio > 0 for ratio in ratios)
    assert "| every setting fixed (" in section and "| grey PNGs resized, defaults (" in section
    assert "`automl-transfer search --trials 1 --no-refit`" in section and "`bench/minimal_train.py`" in section


@pytest.mark.slow
def test_fast_trials_bench_quick_times_every_depth_with_and_without_caches(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("fast_trials.py", "--results", str(results), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "fast-trials")
    for depth in ("| 0 | without", "| 0.5 | with", "| 0.75 | without", "| 1 | with |", "| 1 | with, first"):
        assert depth in section
    assert re.search(r"freeze-1 trial with a warm feature cache is \*\*\d+x\*\* cheaper", section)


@pytest.mark.slow
def test_search_quality_bench_quick_runs_every_method(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("search_quality.py", "--results", str(results), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "search-quality")
    for method in ("hand-written loop", "ours", "random search, no pruning", "ours, a third of the trials",
                   "ours without 1", "ours without 2", "ours without 3", "ours without 4", "ours without 5"):
        assert f"| {method}" in section
    assert re.search(r"ours >= the hand-written loop \(median\) on \*\*\d of 1\*\* task columns", section)


def test_cli_startup_bench_quick_times_both_commands(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("cli_startup.py", "--results", str(results), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "cli-startup")
    medians = {name: float(value) for name, value in re.findall(r"\| `automl-transfer ([^`]+)` \| \*\*([0-9.]+)\*\*", section)}
    assert set(medians) == {"--help", "plugins --json"} and all(value > 0 for value in medians.values())


@pytest.mark.slow
def test_real_sources_bench_quick_names_the_photographs_and_compares_with_random_weights(tmp_path):
    results = tmp_path / "RESULTS.md"

    finished = _run_bench("real_sources.py", "--results", str(results), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "real-sources")
    assert "| lite:lite0 | palace (" in section and "daisy (" in section
    assert re.search(r"\| photos \| lite:lite0 \| \d+\.\d% .*\| [+-]\d+\.\d% \|", section)


@pytest.mark.slow
def test_search_quality_bench_real_quick_gives_the_fine_tune_our_compute(tmp_path):
    results = tmp_path / "RESULTS.md"
    at_our_compute = "hand-written fine-tune, Lite0, as many images as ours"

    finished = _run_bench("search_quality.py", "--real", "--methods", "ours", at_our_compute, "--results", str(results),
                          "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    section = _section(results, "search-quality-real")
    rows = {cells[0]: cells for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                          for line in section.splitlines() if line.startswith("| "))}
    assert set(rows) == {"method", "ours", "ours, cross-check 2 x 3 folds", at_our_compute}
    images = {name: int(cells[-2].replace(",", "")) for name, cells in rows.items() if name != "method"}
    assert abs(images["ours"] - images[at_our_compute]) <= 30  # whole epochs of the 30 labelled images
    assert images["ours, cross-check 2 x 3 folds"] > images["ours"]  # the folds' fits come on top
    assert re.search(rf"ours >= {at_our_compute} \(median\) on \*\*[01] of 1\*\* task columns", section)
    assert "- the source our search kept: lite:lite0 1" in section
