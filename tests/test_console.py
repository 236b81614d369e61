"""The console observer as a user sees it: a live display on a terminal, plain lines elsewhere."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

DATASET = "digits:classes=0-1,per_class=8,size=16"
SPACE = "source: [timm:test_resnet@none]\nlr: 0.01\nhead: linear\nepochs: 3\nbatch_size: 8\nimage_size: 16\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_terminal(args: list[str], columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m automl_transfer ARGS`` with stdin, stdout and stderr on a pseudo-terminal.

    :returns: the exit code and everything the program wrote, escape sequences removed.
    """
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "OMP_NUM_THREADS": "1"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "automl_transfer", *args], stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError as error:  # the terminal closes when the program ends
            if error.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = process.wait(timeout=timeout)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "\n")


@pytest.mark.slow
def test_a_terminal_shows_image_decoding_and_the_running_trial_line(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    code, shown = run_on_terminal(
        ["search", "--dataset", DATASET, "--space", str(space), "--trials", "1", "--run-dir", str(tmp_path / "run")]
    )
    assert code == 0, shown
    assert "decoding images (16 px)" in shown
    running = [line for line in shown.splitlines() if line.strip().startswith("trial 0  epoch")]
    assert any(re.search(r"trial 0  epoch 2/3  accuracy=\d\.\d{4}\s+[\d,]+ img/s", line) for line in running), running
    assert "trial 0: accuracy=" in shown and "Leaderboard (accuracy)" in shown


def test_decoding_reports_progress_over_every_split_and_nothing_from_the_cache(tmp_path: Path) -> None:
    from automl_transfer.data.datasets import load_dataset
    from automl_transfer.data.prepare import prepare_data

    dataset = load_dataset(DATASET)
    total = len(dataset.train) + len(dataset.test)
    calls: list[tuple[int, int]] = []
    prepare_data(dataset, 16, cache_dir=tmp_path, progress=lambda done, of: calls.append((done, of)))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    cached: list[tuple[int, int]] = []
    prepare_data(dataset, 16, cache_dir=tmp_path, progress=lambda done, of: cached.append((done, of)))
    assert cached == []


def test_off_a_terminal_a_search_says_its_plan_then_a_line_per_epoch_and_phase(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE + "min_steps: 0\nstart: []\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "automl_transfer", "search", "--dataset", DATASET, "--space", str(space), "--trials", "2",
         "--run-dir", str(run_dir), "--device", "cpu", "--pruner", "none"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"search: 2 trials in all (--trials; 0 finished already), 1 source(s) timm:test_resnet@none, "
                        f"on cpu, in {run_dir}")
    for trial in (0, 1):
        epochs = [line for line in lines if line.startswith(f"trial {trial}  epoch ")]
        assert len(epochs) == 3 and all(re.fullmatch(rf"trial {trial}  epoch \d/3  accuracy=\d\.\d{{4}}  [\d,]+ img/s", line)
                                        for line in epochs), lines
    summary = json.loads((run_dir / "summary.json").read_text())
    refit = summary["refit"]
    assert (f"refit of trial {summary['best_trial']} on train + validation ({refit['train_images']} images, "
            f"{refit['epochs']} epochs) ...") in lines

    # The leaderboard's rank 1 is the model kept in best/, marked; epochs are those trained.
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in result.stdout.splitlines()
            if line.startswith("│")]
    assert rows[0][:2] == ["1", f"{summary['best_trial']} *"] and "* its model is in best/" in result.stdout
    assert {row[-1] for row in rows} == {"3"}


def test_a_quiet_search_from_python_prints_nothing(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    script = ("import sys; from automl_transfer import TransferSearch; TransferSearch(dataset=sys.argv[1], "
              "space=sys.argv[2], trials=1, run_dir=sys.argv[3], quiet=True, device='cpu').run()")
    result = subprocess.run([sys.executable, "-c", script, DATASET, str(space), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
