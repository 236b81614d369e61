"""The leaderboard: every parameter that varied is shown, and the layout fits the terminal."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from automl_transfer.reporting.leaderboard import leaderboard

#: What varies between the trials below, as the leaderboard names it.
VARYING = ["source", "freeze_depth", "lr", "weight_decay", "head", "batch_size", "mlp.dropout", "mlp.hidden"]


def trial_params(number: int) -> dict:
    """The ``params`` user attr of trial ``number``: every searched key varies, heads alternate."""
    head = "mlp" if number % 2 else "linear"
    return {
        "source": "timm:efficientnet_b0.ra_in1k" if number % 2 == 0 else "timm:resnet18.a1_in1k",
        "freeze_depth": 0.1 * number,
        "lr": 1e-3 * (number + 1),
        "weight_decay": 0.01 * (number + 1),
        "l2sp": 0.0,
        "head": head,
        "head_params": {"hidden": 256 * (1 + number % 3), "dropout": 0.1 * number} if head == "mlp" else {},
        "epochs": 10,
        "batch_size": [32, 64][number % 2],
        "image_size": 128,
        "interpolation": "bicubic",
        "augment": True,
        "extra": {},
    }


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number in range(6):
        params = trial_params(number)
        searched = {"lr": params["lr"], "weight_decay": params["weight_decay"], "head": params["head"]}
        distributions = {
            "lr": FloatDistribution(1e-4, 1.0, log=True),
            "weight_decay": FloatDistribution(1e-4, 1.0, log=True),
            "head": CategoricalDistribution(["linear", "mlp"]),
        }
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=0.5 + 0.05 * number,
                params=searched,
                distributions=distributions,
                user_attrs={"params": params},
            )
        )
    return study


def render(study: optuna.Study, width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(leaderboard(study, "accuracy", console))
    return console.file.getvalue()


def test_a_wide_terminal_gets_a_table_with_every_varying_parameter_as_a_column(study: optuna.Study) -> None:
    shown = render(study, 200)
    header = next(line for line in shown.splitlines() if "rank" in line)
    columns = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    assert columns == ["rank", "trial", "accuracy", "val_loss", *VARYING, "epochs"]
    assert "l2sp" not in shown and "image_size" not in shown and "interpolation" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 200


def test_an_80_column_terminal_gets_one_block_per_trial_and_no_wrapped_header(study: optuna.Study) -> None:
    shown = render(study, 80)
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "┃" not in shown and "…" not in shown
    blocks = shown.split("\n#")[1:]
    assert [block.split()[2] for block in blocks] == ["5", "4", "3", "2", "1", "0"]
    best = blocks[0]  # trial 5: mlp head
    assert [line.split(":")[0].strip() for line in best.splitlines()[1:] if ":" in line][: len(VARYING)] == VARYING
    assert "  source: timm:resnet18.a1_in1k" in best and "  mlp.hidden: 768" in best
    linear = blocks[1]  # trial 4 chose the linear head: no mlp parameters listed
    assert "mlp." not in linear and "  head: linear" in linear
    assert lines[-1].strip() == "0 pruned, 0 failed"


def test_ties_are_ranked_by_the_lower_validation_loss_as_best_is_picked_and_epochs_are_those_trained() -> None:
    study = optuna.create_study(direction="maximize")
    for value, loss, epochs in [(1.0, 0.5, 10), (1.0, 0.2, 4), (0.9, 0.1, 7)]:  # trial 1 ties trial 0 with less loss
        params = {**trial_params(0), "lr": 0.01 * epochs}
        attrs = {"params": params, "metrics": {"val_loss": loss}, **{f"epoch_{n}": {} for n in range(1, epochs + 1)}}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"lr": params["lr"]},
                                     distributions={"lr": FloatDistribution(1e-4, 1.0)}, user_attrs=attrs))
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in render(study, 200).splitlines()
            if line.startswith("│")]
    assert [(row[1], row[3], row[-1]) for row in rows] == [("1", "0.2000", "4"), ("0", "0.5000", "10"),
                                                           ("2", "0.1000", "7")]
