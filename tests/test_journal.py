"""The journal after a crash: a torn last record, a lost newline, a bad line, a record glued onto a tear.

Each case damages a real Optuna journal the way a crash (or an older version resuming after
one) does, and checks that every record written before the damage is still read afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState
from search_processes import CLI, assert_best_matches, assert_counted, open_study, run, search_command, write_space

from automl_transfer.commands.cli import main
from automl_transfer.storage.backends import open_run_storage, open_storage
from automl_transfer.storage.journal import JournalCorruptError, scan_journal

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_study(run_dir: Path, trials: int = 4) -> list[tuple]:
    """Record ``trials`` complete trials and a running one whose last user attr is the file's last record."""
    study = optuna.create_study(study_name="s", storage=open_storage(run_dir), sampler=optuna.samplers.RandomSampler(0))
    for number in range(trials):
        trial = study.ask()
        trial.set_user_attr("epoch_1", {"accuracy": number / 10})
        study.tell(trial, trial.suggest_float("lr", 1e-3, 1e-1))
    study.ask().set_user_attr("last", "the record a crash will tear")
    return snapshot(run_dir)


def snapshot(run_dir: Path, read_only: bool = False) -> list[tuple]:
    storage = open_run_storage(run_dir, read_only=read_only)
    return [(t.number, t.state, t.params, t.value, t.user_attrs) for t in optuna.load_study(study_name="s", storage=storage).trials]


def journal_lines(run_dir: Path) -> list[bytes]:
    return (run_dir / "study.journal").read_bytes().splitlines(keepends=True)


def sidecars(run_dir: Path, kind: str) -> list[Path]:
    return sorted(run_dir.glob(f"study.journal.{kind}-*"))


@pytest.mark.parametrize("cut", [2, 40, "all but one byte", "NUL bytes"])
def test_a_torn_last_record_is_moved_aside_and_every_earlier_record_kept(tmp_path: Path, cut) -> None:
    before = make_study(tmp_path)
    journal = tmp_path / "study.journal"
    whole = journal.read_bytes()
    last = journal_lines(tmp_path)[-1]
    kept = whole[: len(whole) - len(last)]
    if cut == "NUL bytes":  # a power loss can leave the size updated and the data not
        journal.write_bytes(kept + b"\0" * 57)
    else:
        journal.write_bytes(whole[: len(whole) - (len(last) - 1 if cut == "all but one byte" else cut)])
    torn = journal.read_bytes()[len(kept):]

    assert snapshot(tmp_path, read_only=True)[:-1] == before[:-1]  # a reader skips the tear, changing nothing
    assert journal.read_bytes() == kept + torn
    study = optuna.load_study(study_name="s", storage=open_storage(tmp_path))  # what every search does first
    assert journal.read_bytes() == kept
    (sidecar,) = sidecars(tmp_path, "torn")
    assert sidecar.read_bytes() == torn
    study.tell(study.ask(), 0.5)  # appends after the last whole record, not onto the tear
    after = snapshot(tmp_path)
    assert after[:-2] == before[:-1] and after[-1][1] == TrialState.COMPLETE
    assert not (tmp_path / "study.journal.lock").exists()


def test_a_last_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    before = make_study(tmp_path)
    journal = tmp_path / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-1])
    open_storage(tmp_path)
    assert journal.read_bytes() == whole and not sidecars(tmp_path, "torn")
    assert snapshot(tmp_path) == before


def test_a_healthy_journal_is_left_byte_for_byte(tmp_path: Path) -> None:
    make_study(tmp_path)
    journal = tmp_path / "study.journal"
    whole, stat = journal.read_bytes(), journal.stat()
    open_storage(tmp_path)
    assert journal.read_bytes() == whole and journal.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(path.name for path in tmp_path.iterdir()) == ["study.journal"]


def test_a_bad_line_before_the_end_is_named_and_changes_nothing_until_repair(tmp_path: Path, capsys) -> None:
    before = make_study(tmp_path)
    journal = tmp_path / "study.journal"
    lines = journal_lines(tmp_path)
    damaged = b"".join([*lines[:3], b"this is not a record\n", *lines[3:]])
    journal.write_bytes(damaged)

    with pytest.raises(JournalCorruptError) as caught:
        open_storage(tmp_path)
    message = str(caught.value)
    assert "line 4 (byte offset" in message and f"automl-transfer repair {tmp_path}" in message
    assert journal.read_bytes() == damaged
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {journal} is damaged at line 4")

    assert main(["repair", str(tmp_path)]) == 0
    assert "moved bad line(s) 4" in capsys.readouterr().out
    assert snapshot(tmp_path) == before
    (sidecar,) = sidecars(tmp_path, "bad")
    assert sidecar.read_bytes() == b"this is not a record\n"


def test_repair_keeps_a_record_an_older_version_glued_onto_a_torn_one(tmp_path: Path, capsys) -> None:
    make_study(tmp_path)
    journal = tmp_path / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-40])
    before = snapshot(tmp_path, read_only=True)
    # What optuna's own backend (and so automl-transfer before the repair) does next: append onto the tear.
    backend = JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
    for value in ("glued", "next"):
        backend.append_logs([{"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"note": value}}])
    with pytest.raises(JournalCorruptError, match="a torn record with a whole one glued after it"):
        open_storage(tmp_path)

    assert main(["repair", str(tmp_path)]) == 0
    assert "moved bad line(s)" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=open_storage(tmp_path))
    assert study.user_attrs["note"] == "next"  # the glued record ("glued") was kept too, then overwritten
    assert snapshot(tmp_path)[:-1] == before[:-1]
    torn = sidecars(tmp_path, "bad")[0].read_bytes()
    assert b"glued" not in torn and not torn.endswith(b"\n")  # only the torn prefix was moved aside


def test_a_writer_that_outlives_a_crashed_one_never_glues_onto_its_tear(tmp_path: Path) -> None:
    before = make_study(tmp_path)
    survivor = optuna.load_study(study_name="s", storage=open_storage(tmp_path))  # opened before the crash
    torn = b'{"op_code":8,"worker_id":"dead","trial_id":4,"user_at'
    with open(tmp_path / "study.journal", "ab") as journal:
        journal.write(torn)  # another worker died in the middle of this write
    survivor.tell(survivor.ask(), 0.25)
    assert scan_journal(tmp_path / "study.journal").bad_lines == ()
    after = snapshot(tmp_path)
    assert after[:-1] == before and after[-1][3] == 0.25
    assert sidecars(tmp_path, "torn")[0].read_bytes() == torn


@pytest.mark.slow
def test_a_search_resumes_from_a_journal_cut_by_a_crash_and_report_says_what_is_missing(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    assert run(search_command(space, run_dir, 3)).returncode == 0
    finished = {t.number: t.value for t in open_study(run_dir).trials}
    journal = run_dir / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-40])  # the last record (trial 2 completing) cut by a crash

    report = run([*CLI, "report", str(run_dir)])
    assert report.returncode == 0 and "Traceback" not in report.stderr
    assert f"warning: {journal} ends in a torn record" in report.stderr
    assert journal.read_bytes() == whole[:-40]  # report never writes to the journal

    resumed = run(search_command(space, run_dir, 4))
    assert resumed.returncode == 0, resumed.stderr
    assert "moved a torn last record" in resumed.stderr
    study = open_study(run_dir)
    assert {n: study.trials[n].value for n in (0, 1)} == {n: finished[n] for n in (0, 1)}
    cut = study.trials[2]  # completed from best/ when it was the best, else failed and run again
    assert cut.value == finished[2] if "recovered" in cut.user_attrs else cut.state == TrialState.FAIL
    assert_counted(study, 4)
    assert_best_matches(run_dir, study)


@pytest.mark.slow
def test_a_garbage_line_stops_the_search_with_its_line_number_until_repair(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    assert run(search_command(space, run_dir, 2)).returncode == 0
    before = {t.number: (t.state, t.value) for t in open_study(run_dir).trials}
    journal = run_dir / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:5], b"\x00garbage\n", *lines[5:]]))

    refused = run(search_command(space, run_dir, 3))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: {journal} is damaged at line 6 (byte offset")
    repaired = subprocess.run([*CLI, "repair", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    resumed = run(search_command(space, run_dir, 3))
    assert resumed.returncode == 0, resumed.stderr
    study = open_study(run_dir)
    assert {n: (study.trials[n].state, study.trials[n].value) for n in before} == before
    assert_counted(study, 3)
