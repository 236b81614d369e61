"""A damaged best model and a full disk: one error line that says how to recover, and nothing recorded lost.

The faults are made with real files and processes: model.json overwritten, model.safetensors
deleted, and a run dir on a tmpfs filled to the last byte (in a user and mount namespace,
where the machine allows one; a simulated ENOSPC otherwise covers the same path).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_processes import CLI, DATASET, assert_best_matches, assert_counted, open_study, run, search_command, write_space

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main
from automl_transfer.errors import RunDirError
from automl_transfer.storage import checkpoint


def finished_trials(run_dir: Path) -> dict[int, tuple]:
    return {t.number: (t.state, t.value, t.params) for t in open_study(run_dir).trials if t.state.is_finished()}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-trial search: its space file and its run dir (copy it before damaging it)."""
    root = tmp_path_factory.mktemp("finished")
    space = write_space(root)
    assert run(search_command(space, root / "run", 2)).returncode == 0
    return space, root / "run"


def copy_run(finished_search, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_search[1], run_dir, symlinks=True)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["model.json overwritten", "model.safetensors deleted"])
def test_a_damaged_best_model_stops_search_and_predict_until_repair_rebuilds_it(finished_search, tmp_path, damage):
    space, _ = finished_search
    run_dir = copy_run(finished_search, tmp_path)
    best_dir = (run_dir / "best").resolve()
    if damage == "model.json overwritten":
        (best_dir / "model.json").write_text('{"format_version": 1, "source": ')
    else:
        (best_dir / "model.safetensors").unlink()
    before = finished_trials(run_dir)
    journal = (run_dir / "study.journal").read_bytes()

    refused = run(search_command(space, run_dir, 3))
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: the best model of {run_dir} is damaged: ")
    assert f"run `automl-transfer repair {run_dir}` to retrain trial" in line
    assert (run_dir / "study.journal").read_bytes() == journal  # refused before writing anything
    predicted = run([*CLI, "predict", str(run_dir), str(Path(__file__).parent / "data" / "digit.png")])
    assert predicted.returncode == 2 and len(predicted.stderr.splitlines()) == 1
    assert f"automl-transfer repair {run_dir}" in predicted.stderr and "Traceback" not in predicted.stderr

    repaired = run([*CLI, "repair", str(run_dir), "--device", "cpu"])
    assert repaired.returncode == 0, repaired.stderr
    assert "retrained trial" in repaired.stdout
    (kept,) = run_dir.glob("best.damaged-*")
    assert (kept / "model.json").is_file()  # the damaged files are kept for a look
    assert finished_trials(run_dir) == before  # the study is not changed by the repair
    assert_best_matches(run_dir, open_study(run_dir))  # retrained with the same params and seed: the same value

    resumed = run(search_command(space, run_dir, 3))
    assert resumed.returncode == 0, resumed.stderr
    study = open_study(run_dir)
    assert {n: v for n, v in finished_trials(run_dir).items() if n in before} == before
    assert_counted(study, 3)
    assert_best_matches(run_dir, study)


def test_best_model_damaged_during_a_search_fails_the_trial_requeues_it_and_stops(tmp_path: Path) -> None:
    settings = dict(dataset=DATASET, space=str(write_space(tmp_path)), run_dir=tmp_path / "run", quiet=True, device="cpu")
    TransferSearch(trials=1, **settings).run()  # trial 0 saves best/
    search = TransferSearch(trials=3, **settings)
    study = search.open()
    (checkpoint.resolve_best_dir(tmp_path / "run") / "model.json").write_text("[not json")  # while it runs
    with pytest.raises(RunDirError, match=r"cannot save the best model of trial 1: .*model.json is not valid JSON"):
        search.work(study)
    study = open_study(tmp_path / "run")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["fail_reason"].startswith("best model not saved: ")
    assert study.trials[2].user_attrs["retry_of"] == 1
    assert study.trials[2].system_attrs["fixed_params"] == study.trials[1].params  # re-queued as it was


def test_a_simulated_full_disk_while_saving_the_best_model_is_one_line_and_keeps_the_old_one(
    finished_search, tmp_path, monkeypatch, capsys
):
    space, _ = finished_search
    run_dir = copy_run(finished_search, tmp_path)
    before, before_state = checkpoint.load_best(run_dir)
    trials_before = finished_trials(run_dir)

    def full_disk(model_dir, model, info_text):
        (model_dir / "model.json").write_text(info_text[: len(info_text) // 2])  # a half-written file, as ENOSPC leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(model_dir / "model.safetensors"))

    monkeypatch.setattr(checkpoint, "_write_model_files", full_disk)
    monkeypatch.setattr(checkpoint, "_beats", lambda value, val_loss, current, maximize: True)  # the next trial wins
    assert main(search_command(space, run_dir, 3, "--quiet")[3:]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: cannot save the best model of trial 2: No space left on device (")
    assert "free some space" in line and "trial 2 runs again" in line
    after, after_state = checkpoint.load_best(run_dir)
    assert after == before and after_state.keys() == before_state.keys()
    assert all(after_state[name].equal(tensor) for name, tensor in before_state.items())
    assert len(list((run_dir / ".best").iterdir())) == 1  # the half-written model directory was removed
    assert {n: v for n, v in finished_trials(run_dir).items() if n in trials_before} == trials_before
    assert not list(run_dir.glob(".summary.json.*"))


def namespaces_work() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own user and mount namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


FULL_DISK_SCRIPT = r"""
set -e
mount -t tmpfs -o size=32m tmpfs "$MOUNT"
cp -a "$SOURCE/." "$MOUNT/"
"$PYTHON" -c '
import os, sys
descriptor = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(descriptor, b"x" * 65536)
except OSError:
    pass
try:
    while True:
        os.write(descriptor, b"x")
except OSError:
    pass
' "$MOUNT/.filler"
set +e
"$@" > "$OUT/full.out" 2> "$OUT/full.err"; echo $? > "$OUT/full.rc"
set -e
mkdir "$OUT/full" && cp -a "$MOUNT/." "$OUT/full/"
rm "$MOUNT/.filler"
"$@" > "$OUT/freed.out" 2> "$OUT/freed.err"; echo $? > "$OUT/freed.rc"
mkdir "$OUT/freed" && cp -a "$MOUNT/." "$OUT/freed/"
"""


@pytest.mark.slow
@pytest.mark.skipif(not namespaces_work(), reason="needs `unshare -rm` to mount a small tmpfs; the simulated ENOSPC "
                    "test covers the same path")
def test_a_full_tmpfs_gives_one_error_line_loses_nothing_and_the_same_command_resumes(finished_search, tmp_path):
    space, source = finished_search
    mount, out = tmp_path / "mount", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    before = finished_trials(source)
    best_before, _ = checkpoint.load_best(source)
    command = search_command(space, mount, 3)
    environment = {"MOUNT": str(mount), "SOURCE": str(source), "OUT": str(out), "PYTHON": sys.executable,
                   "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh", *command], env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    assert (out / "full.rc").read_text().strip() == "2"
    err = (out / "full.err").read_text()
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "No space left on device" in line and "free some space" in line, err
    full = out / "full"
    assert not list(full.glob(".summary.json.*")) and not list(full.glob(".best.link-*"))
    assert checkpoint.load_best(full)[0] == best_before  # the previous best model, whole
    assert {n: v for n, v in finished_trials(full).items() if n in before} == before

    assert (out / "freed.rc").read_text().strip() == "0", (out / "freed.err").read_text()
    freed = out / "freed"
    study = open_study(freed)
    assert {n: v for n, v in finished_trials(freed).items() if n in before} == before
    assert_counted(study, 3)
    assert assert_best_matches(freed, study)["best_value"] >= best_before["value"]
