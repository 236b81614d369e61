"""CLI start-up: wall time of `automl-transfer --help` and `automl-transfer plugins --json`.

Both are what a user waits for before any work: `--help` must answer in under 0.5 s (issue 13)
and `plugins --json` in under 1.5 s (issue 9), which holds only while building the parser and
loading the plugins import no torch, timm or optuna. Each command runs as the user runs it (the
installed console script, a fresh process each time), after one untimed run that warms the
file cache; the runs of the two commands are interleaved and the median is the figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import median, publish, section_preamble, table

#: The commands measured, each with its goal in seconds.
COMMANDS = {"--help": 0.5, "plugins --json": 1.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of each: proves the script works")
    parser.add_argument("--repeats", type=int, help="timed runs of each command (default 21)")
    parser.add_argument(
        "--results", type=Path, help="results file to update (default bench/RESULTS.md; not written by --quick)"
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 21)
    return args


def program() -> list[str]:
    """The installed ``automl-transfer`` script beside this Python, else ``python -m automl_transfer``."""
    script = Path(sys.executable).with_name("automl-transfer")
    found = str(script) if script.is_file() else shutil.which("automl-transfer")
    return [found] if found else [sys.executable, "-m", "automl_transfer"]


def seconds_to_run(command: list[str]) -> float:
    """Run ``command`` once, its output discarded; return its wall time in seconds.

    :raises RuntimeError: the command failed (its stderr is in the message).
    """
    start = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {finished.stderr.strip()}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Measure both commands, print the section and update the results file."""
    args = parse_args(argv)
    base = program()
    load = os.getloadavg()[0]
    commands = {name: [*base, *name.split()] for name in COMMANDS}
    for command in commands.values():
        seconds_to_run(command)  # warm-up: file cache and bytecode
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(seconds_to_run(command))
    rows = []
    for name, goal in COMMANDS.items():
        middle = median(times[name])
        rows.append([
            f"`automl-transfer {name}`",
            f"**{middle:.3f}**",
            f"{min(times[name]):.3f}",
            f"{max(times[name]):.3f}",
            f"< {goal}",
            "met" if middle < goal else "NOT met",
        ])
    body = (
        section_preamble("CLI start-up (bench/cli_startup.py)", None)
        + f"- setup: the installed `{Path(base[0]).name}` script (or `python -m automl_transfer`) run as a new process "
        f"each time, output discarded; one untimed warm-up run of each command, then {args.repeats} interleaved runs "
        f"of each; seconds of wall time; 1-minute load average at the start: {load:.2f} (other jobs on the machine)\n\n"
        + table(["command", "median s", "min s", "max s", "goal s", "goal"], rows)
        + "\n"
    )
    publish("cli-startup", body, args.quick, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
