"""A whole ``best/`` at the start of every search, and rebuilding a damaged or lost one from the study.

Every trial that completed went through ``save_best_if_better``, so a study with a complete
trial must have a whole ``best/``. When it has not (a file deleted or edited, a broken disk),
a search refuses to start (:func:`check_best_model`): every improving trial would fail on the
damaged files, and ``predict`` would fail too. ``automl-transfer repair`` then calls
:func:`rebuild_best`, which moves the damaged files aside (``RUN/best.damaged-<time>``) and
retrains the study's best trial with its recorded parameters and seed into a new ``best/``.
The study itself is not changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from optuna.trial import TrialState

from automl_transfer.errors import RunDirError
from automl_transfer.search.recovery import SEED_TRIAL, TRAIN_SEED
from automl_transfer.search.summary import best_trial, write_summary
from automl_transfer.storage.checkpoint import BEST_LINK, best_damage, save_best, set_aside_best
from automl_transfer.training.params import TrialParams

if TYPE_CHECKING:
    from pathlib import Path

    import optuna

    from automl_transfer.search.config import SearchConfig
    from automl_transfer.search.trials import TrialRunner


class AttachedSearch(Protocol):
    """What :func:`rebuild_best` needs of a search attached to its study (a ``TransferSearch`` is one).

    :ivar config: the search's settings.
    :ivar runner: its trial runner (it trains a trial's model and describes it as ``model.json`` does).
    """

    config: SearchConfig
    runner: TrialRunner


def best_problem(study: optuna.Study, run_dir: Path) -> str | None:
    """Tell what is wrong with the run dir's ``best/``, given the study.

    :returns: ``None`` when it is whole, or absent while no trial has completed; else the problem.
    """
    damage = best_damage(run_dir)
    if damage is not None:
        return damage
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed and not (run_dir / BEST_LINK).is_symlink():
        return f"{run_dir / BEST_LINK} is missing although {len(completed)} trial(s) completed"
    return None


def check_best_model(study: optuna.Study, run_dir: Path) -> None:
    """Refuse to go on with a damaged or lost ``best/``, saying how to get a whole one back.

    :raises RunDirError: naming the problem, the trial ``automl-transfer repair`` would retrain
        and the command.
    """
    problem = best_problem(study, run_dir)
    if problem is None:
        return
    best = best_trial(study)
    retrain = f"retrain trial {best.number} (value {best.value:.4g})" if best else "clear it"
    raise RunDirError(
        f"the best model of {run_dir} is damaged: {problem}. The study and its {len(study.trials)} trial(s) are "
        f"intact: run `automl-transfer repair {run_dir}` to {retrain} with its parameters and seed into a new "
        "best/ (the damaged files are kept beside it), or restore best/ from a backup; then run this command again"
    )


def rebuild_best(search: AttachedSearch, study: optuna.Study) -> str:
    """Move a damaged ``best/`` aside and retrain the study's best trial into a new one.

    :param search: the search, attached to ``study`` (see :func:`~automl_transfer.search.join.join_search`).
    :returns: what was done, in words.
    :raises RunDirError: the best trial recorded no parameters to retrain it with.
    :raises AutoMLTransferError: its source, dataset or device cannot be used any more.
    """
    run_dir = search.config.run_dir
    best = best_trial(study)
    if best is not None and "params" not in best.user_attrs:
        raise RunDirError(f"trial {best.number} of {run_dir} records no parameters, so its model cannot be rebuilt")
    kept = set_aside_best(run_dir)
    moved = f"; the damaged files are in {kept}" if kept else ""
    if best is None:
        return f"no trial has completed yet, so there is no best model to rebuild{moved}"
    params = TrialParams.from_dict(best.user_attrs["params"])
    seed = best.user_attrs.get(TRAIN_SEED, search.config.seed + best.user_attrs.get(SEED_TRIAL, best.number))
    trained = search.runner.train(params, seed, lambda epoch, metrics: None)
    value = trained.metrics[search.runner.context.metric_key]
    save_best(run_dir, trained.model, search.runner.model_info(best.number, trained, value))
    write_summary(study, search.config.metric, run_dir)
    return (f"retrained trial {best.number} into a new best model in {run_dir / BEST_LINK}: "
            f"{search.config.metric} {value:.4f} now, {best.value:.4f} when it first ran{moved}")
