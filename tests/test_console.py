"""The console observer as a user sees it: a live display on a terminal, plain lines elsewhere."""

from __future__ import annotations

import errno
import fcntl
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
