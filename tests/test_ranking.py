"""Ranking sources: LogME and kNN on cases whose answer is known, the rank command and the prior."""

from __future__ import annotations

import numpy as np
import pytest
from search_processes import open_study

from automl_transfer.ranking.knn import knn_accuracy
from automl_transfer.ranking.logme import logme

LOG_2PI = np.log(2 * np.pi)


def clusters(per_class: int, classes: int, dims: int, separation: float, seed: int, noise: float = 1.0):
    """Gaussian blobs, class c centred at separation * e_c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = np.zeros((classes, dims))
    centres[np.arange(classes), np.arange(classes)] = separation
    return centres[labels] + noise * rng.standard_normal((labels.size, dims)), labels


def test_logme_of_one_constant_feature_is_the_hand_computed_evidence():
    # N=4, D=1, f=1: y ~ N(0, I/beta + J/alpha); with |Py|^2 = |(I-P)y|^2 = 1 the evidence peaks at
    # beta = 3, alpha = 6, giving -1/2 [log 2pi + (3 log(1/3) + log 1 + 3 + 1) / 4] per sample and class.
    expected = -0.5 * (LOG_2PI + (3 * np.log(1 / 3) + 3 + 1) / 4)
    assert logme(np.ones((4, 1)), np.array([1, 1, 0, 0])) == pytest.approx(expected, abs=1e-4)


def test_logme_equals_the_explicit_evidence_maximum():
    # The same score from the paper's formula with an explicit inverse, maximised on a fine grid.
    features, labels = clusters(15, 3, 6, 2.0, seed=1)
    n, d = features.shape
    best = []
    for label in range(3):
        y = (labels == label).astype(float)
        values = []
        for alpha in np.exp(np.linspace(-4, 6, 60)):
            for beta in np.exp(np.linspace(-3, 4, 60)):
                a = alpha * np.eye(d) + beta * features.T @ features
                m = beta * np.linalg.solve(a, features.T @ y)
                values.append((d * np.log(alpha) + n * np.log(beta) - n * LOG_2PI - beta * np.sum((features @ m - y) ** 2)
                               - alpha * np.sum(m**2) - np.linalg.slogdet(a)[1]) / (2 * n))
        best.append(max(values))
    assert logme(features, labels) == pytest.approx(np.mean(best), abs=2e-3)  # the grid is coarse


def test_logme_scores_separable_features_above_random_ones():
    separable, labels = clusters(30, 4, 16, 6.0, seed=5, noise=0.5)
    random = np.random.default_rng(6).standard_normal(separable.shape)
    assert logme(separable, labels) > logme(random, labels) + 0.5


def test_logme_ignores_sample_order_class_names_scale_and_zero_columns():
    features, labels = clusters(20, 3, 10, 2.0, seed=7)
    base = logme(features, labels)
    order = np.random.default_rng(8).permutation(len(labels))
    assert logme(features[order], labels[order]) == pytest.approx(base, abs=1e-9)
    assert logme(features, np.array([2, 0, 1])[labels]) == pytest.approx(base, abs=1e-12)
    assert logme(10 * features, labels) == pytest.approx(base, abs=1e-4)
    assert logme(np.hstack([features, np.zeros((len(labels), 5))]), labels) == pytest.approx(base, abs=1e-9)


def test_knn_is_perfect_on_separated_clusters_and_near_chance_on_random_labels():
    features, labels = clusters(25, 4, 8, 10.0, seed=20)
    assert knn_accuracy(features, labels) == 1.0
    rng = np.random.default_rng(21)
    assert abs(knn_accuracy(rng.standard_normal((900, 16)), rng.integers(0, 3, 900)) - 1 / 3) < 0.07


def test_knn_leave_one_out_never_lets_a_point_vote_for_itself():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])  # each point's nearest other point has the other label
    assert knn_accuracy(features, labels, k=1) == 0.0
    assert knn_accuracy(features, labels, features, labels, k=1) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: logme(np.ones((3, 2)), np.array([0, 0, 0])), "at least 2 classes"),
    (lambda: logme(np.ones((3, 2)), np.array([0, 1])), "has 2 entries"),
    (lambda: logme(np.full((2, 2), np.nan), np.array([0, 1])), "NaN"),
    (lambda: knn_accuracy(np.ones((3, 2)), np.array([0, 1, 0]), np.ones((2, 2))), "give both"),
    (lambda: knn_accuracy(np.ones((3, 2)), np.array([0, 1, 0]), k=0), "k must be at least 1"),
])
def test_bad_input_is_a_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two test_resnet backbones with different random weights, saved as the user's checkpoints."""
    import timm
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = folder / f"resnet-{seed}.safetensors"
        save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), path)
        paths.append(path)
    return paths


DATASET = "digits:classes=0-2,per_class=20,size=16"


def write_space(folder, checkpoints, extra: str = ""):
    space = folder / "space.yaml"
    sources = "".join(f"  - timm:test_resnet@{path}\n" for path in checkpoints)
    space.write_text(f"source:\n{sources}  - timm:test_resnet@none\nimage_size: 16\nepochs: 1\nmin_steps: 0\n"
                     f"freeze_depth: [0.0, 1.0]\nlr: {{low: 1.0e-3, high: 1.0e-1, log: true}}\n{extra}")
    return space


def test_rank_command_prints_a_table_and_one_json_object_with_random_weights_last(checkpoints, tmp_path, capsys):
    import json

    from automl_transfer.commands.cli import main

    space = write_space(tmp_path, checkpoints)
    arguments = ["rank", "--dataset", DATASET, "--space", str(space), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*arguments, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [entry["rank"] for entry in listing["sources"]] == [1, 2, 3]
    assert isinstance(listing["estimators_agree"], bool)
    assert set(listing["sources"][0]) == {"source", "logme", "knn_accuracy", "rank", "seconds"}
    last = listing["sources"][-1]
    assert last["source"] == "timm:test_resnet@none" and last["logme"] is None and last["knn_accuracy"] is None
    assert all(isinstance(entry["logme"], float) and 0 <= entry["knn_accuracy"] <= 1 for entry in listing["sources"][:2])
    features = sorted((tmp_path / "run" / "cache").glob("features-*.safetensors"))
    assert len(features) == 2  # one per pretrained source, where the search's trials will find them

    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "LogME" in printed and "kNN accuracy" in printed and "ranked last" in printed


def test_the_prior_orders_the_start_points_and_a_resume_does_not_rank_again(checkpoints, tmp_path, monkeypatch):
    import optuna

    from automl_transfer import TransferSearch
    from automl_transfer.ranking.rank import SourceScore
    from automl_transfer.search import search as search_module

    calls = []

    def reversed_ranking(sources, *args, **kwargs):
        calls.append(sources)
        ranked = [sources[1], sources[0], sources[2]]  # the second checkpoint first
        return [SourceScore(source, 0.0, 0.5, rank, 0.0) for rank, source in enumerate(ranked, start=1)]

    monkeypatch.setattr(search_module, "rank_sources", reversed_ranking)
    space = write_space(tmp_path, checkpoints, "start: [{freeze_depth: 1.0, lr: 0.1}]\n")
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True, refit=False).run()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert [trial.params["source"] for trial in study.trials[:2]] == [
        f"timm:test_resnet@{checkpoints[1]}", f"timm:test_resnet@{checkpoints[0]}"
    ]
    assert [entry["rank"] for entry in study.user_attrs["automl_transfer_ranking"]] == [1, 2, 3]
    assert study.trials[0].user_attrs["frozen_reuse"] == "features (cached)"

    TransferSearch(dataset=DATASET, space=str(space), trials=3, run_dir=run_dir, quiet=True, refit=False).run()
    assert len(calls) == 1  # the resume read the recorded ranking


def test_sources_the_estimators_order_differently_keep_the_space_order(checkpoints, tmp_path, monkeypatch):
    """LogME prefers the second checkpoint, kNN the first: the averaged rank is no evidence, so no reordering."""
    from automl_transfer import TransferSearch
    from automl_transfer.ranking.rank import SourceScore, agreed_order
    from automl_transfer.search import search as search_module
    from automl_transfer.search.record import recorded_ranking

    def contradicting(sources, *args, **kwargs):
        return [SourceScore(sources[1], -0.035, 0.60, 1, 0.0), SourceScore(sources[0], -0.10, 0.65, 2, 0.0),
                SourceScore(sources[2], None, None, 3, 0.0)]

    assert agreed_order(contradicting(["a", "b", "c"])) is None
    assert agreed_order([SourceScore("b", -0.035, 0.65, 1, 0.0), SourceScore("a", -0.10, 0.65, 2, 0.0)]) == ["b", "a"]
    monkeypatch.setattr(search_module, "rank_sources", contradicting)
    space = write_space(tmp_path, checkpoints, "start: [{freeze_depth: 1.0, lr: 0.1}]\n")
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True, refit=False).run()
    study = open_study(run_dir)
    assert [trial.params["source"] for trial in study.trials[:2]] == [
        f"timm:test_resnet@{checkpoints[0]}", f"timm:test_resnet@{checkpoints[1]}"
    ]
    assert recorded_ranking(study)[0]["source"] == f"timm:test_resnet@{checkpoints[1]}"


def test_no_rank_prior_keeps_the_space_order_and_records_no_ranking(checkpoints, tmp_path):
    import optuna

    from automl_transfer import TransferSearch

    space = write_space(tmp_path, checkpoints, "start: [{freeze_depth: 1.0, lr: 0.1}]\n")
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True, refit=False,
                   rank_prior=False).run()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert study.trials[0].params["source"] == f"timm:test_resnet@{checkpoints[0]}"
    assert "automl_transfer_ranking" not in study.user_attrs


def test_a_space_with_one_pretrained_source_is_not_ranked(checkpoints, tmp_path, monkeypatch):
    """One pretrained source (random weights always go last) leaves nothing to order: no features are computed."""
    import optuna

    from automl_transfer import TransferSearch
    from automl_transfer.search import search as search_module

    monkeypatch.setattr(search_module, "rank_sources", lambda *args, **kwargs: pytest.fail("ranked one source"))
    space = write_space(tmp_path, checkpoints[:1])
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=1, run_dir=run_dir, quiet=True, refit=False).run()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert "automl_transfer_ranking" not in study.user_attrs
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
