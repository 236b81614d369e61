"""The study record: what a search is and how it runs, kept in the study's user attrs.

A search writes two user attrs on its study, and everything that reads them goes through this
module:

- ``automl_transfer`` (:class:`SearchIdentity`): the dataset and its fingerprint, the space as
  the user wrote it (normalised) and the defaults in force for the keys it left out, the metric
  and the validation split, with the record's ``format``. A run dir's study is resumed only by a
  search with the same identity, so that it never goes on with other settings; a release that
  adds a setting whose default keeps the old behaviour still resumes it, and one that changes a
  default names the setting (:meth:`SearchIdentity.differences`). Records without ``format``
  (0.1) hold the whole space, defaults filled in, and are compared the same way.
- ``automl_transfer_job`` (:class:`JobSettings`): the settings of the latest ``search``
  command (trial count, sampler, pruner, seed, run dir, working directory ...). Workers rebuild
  the whole search from the two attrs (:meth:`StudyRecord.search_config`), and read the trial
  count again at every claim, so a ``search`` run with a larger ``--trials`` extends a running
  search.
- ``automl_transfer_ranking``: the sources ranked by transferability when the study was
  created (``[{"source", "logme", "knn_accuracy", "rank", "seconds"}]``, best first), so that
  resumes and workers never compute it again and ``report`` can show it.

The study's name is ``--study``, by default ``<dataset>-<space>`` made file-name safe
(``digits-small``), and its storage the run dir's ``study.journal`` unless ``--storage`` names
a database.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from automl_transfer.contract.trial_settings import settings_by_name, yaml_text
from automl_transfer.search.config import SearchConfig

if TYPE_CHECKING:
    import optuna

#: The study user attr holding the search's identity.
IDENTITY_ATTR = "automl_transfer"
#: The study user attr holding the latest ``search`` command's settings.
JOB_ATTR = "automl_transfer_job"
#: The study user attr holding the ranking of the sources (``rank``'s scores), when one was made.
RANKING_ATTR = "automl_transfer_ranking"
#: The format of the identity this release writes: ``space`` holds what the user wrote, ``defaults``
#: the defaults in force for the rest. Records without ``format`` (0.1) hold the whole space in ``space``.
IDENTITY_FORMAT = 2


def recorded_space(identity: Mapping[str, Any]) -> dict[str, Any]:
    """Return the normalised space a recorded identity trains with: what the user wrote over the defaults then.

    :param identity: a recorded identity, of this format or of one without a format version.
    """
    return {**identity.get("defaults", {}), **identity.get("space", {})}


@dataclass(frozen=True)
class SearchIdentity:
    """What a search is: a study is resumed only by a search with an equal identity.

    :param dataset: the dataset text (``imagefolder:data/pets``).
    :param dataset_fingerprint: :func:`~automl_transfer.data.datasets.dataset_fingerprint` of its content.
    :param space: the keys the search space names, normalised (:meth:`SearchSpace.written`).
    :param metric: the objective (``accuracy`` ...).
    :param val_fraction: the validation share split off datasets without a validation set.
    :param seed: the seed the search was created with. It seeds the validation split for good
        (:func:`split_seed`): a resume with another ``--seed`` samples and trains with the new
        one, but scores every trial on the same validation images, so old and new trials stay
        comparable and the pruner compares like with like. So it is not compared.
    :param dataset_content: the dataset's fingerprint by file content, recorded when the study
        is created (``None`` in older records): when only the files' times changed (a file
        touched, a folder copied), it tells the same data from changed data.
    :param defaults: the defaults in force for the keys the space leaves out (:meth:`SearchSpace.defaults`).
    :param format: :data:`IDENTITY_FORMAT`.
    """

    dataset: str
    dataset_fingerprint: str
    space: dict[str, Any]
    metric: str
    val_fraction: float
    seed: int
    dataset_content: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    format: int = IDENTITY_FORMAT

    #: The fields besides the space that must match for a study to be resumed.
    COMPARED = ("dataset", "dataset_fingerprint", "metric", "val_fraction")

    def differences(self, recorded: dict[str, Any], content: Callable[[], str] | None = None) -> list[str]:
        """Return the compared fields whose recorded value differs from this identity's, then the space's differences.

        :param recorded: the identity a study records (of this format, or without one).
        :param content: returns the dataset's content fingerprint; called only when the files'
            sizes or times differ, and the dataset then counts as the same when it matches the
            recorded ``dataset_content``.
        """
        different = [name for name in self.COMPARED if recorded.get(name) != getattr(self, name)]
        if "dataset_fingerprint" in different and content is not None and recorded.get("dataset_content"):
            if recorded["dataset_content"] == content():
                different.remove("dataset_fingerprint")
        return different + self.space_differences(recorded)

    def space_differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """Compare the space this search trains with to the recorded one, key by key.

        A key the recorded space lacks and this space leaves out is a setting added since: it
        is no difference when its default is the value the run trained with before it existed
        (its ``absent`` value in the settings table; without one, the default is that value).

        :param recorded: the identity a study records.
        :returns: ``["space"]`` when the keys the user wrote make a difference, and one text per
            default that changed since (``patience default (5 when it was made, 3 in this release; ...)``).
        """
        before, now = recorded_space(recorded), {**self.defaults, **self.space}
        found: list[str] = []
        for key in dict.fromkeys([*before, *now]):
            if key not in before and key not in self.space:
                before[key] = _value_before(key, now[key])
            if before.get(key, _GONE) == now.get(key, _GONE):
                continue
            if key in self.space or key not in now:
                found += [] if "space" in found else ["space"]
            else:
                old, new = yaml_text(before[key]), yaml_text(now[key])
                found.append(f"{key} default ({old} when it was made, {new} in this release; "
                             f"write `{key}: {old}` in the space to keep it)")
        return found


_GONE = object()


def _value_before(key: str, default: Any) -> Any:
    """The value runs made before setting ``key`` existed trained with, normalised.

    :param default: the setting's default now, normalised: the answer unless the table declares
        another ``absent`` value for the setting.
    """
    setting = settings_by_name().get(key)
    if setting is None or setting.before_it_existed == setting.default:
        return default
    return setting.before_it_existed


@dataclass(frozen=True)
class JobSettings:
    """How the latest ``search`` command asked the search to run; workers follow it.

    :param trials: the trial count the study should hold when done.
    :param seed: the sampler's and training's base seed.
    :param pruner: the pruner's name.
    :param sampler: the sampler's name.
    :param skip_bad_images: skip unreadable images instead of stopping.
    :param compile: ``torch.compile`` on CUDA.
    :param run_dir: the run directory, absolute.
    :param cwd: the directory the command ran in (relative dataset paths are read from it).
    :param heartbeat_interval: seconds between heartbeats in an RDB storage.
    """

    trials: int
    seed: int
    pruner: str
    sampler: str
    skip_bad_images: bool
    compile: bool
    run_dir: str
    cwd: str
    heartbeat_interval: int

    @classmethod
    def of(cls, config: SearchConfig) -> JobSettings:
        """Return the job settings of ``config`` (its fields of the same names), run from the current directory."""
        copied = {name: getattr(config, name) for name in _CONFIG_FIELDS}
        return cls(**copied, run_dir=str(config.run_dir), cwd=os.getcwd())


#: The job settings that are :class:`SearchConfig` fields of the same name and meaning.
_CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(JobSettings) if field.name not in ("run_dir", "cwd"))


@dataclass(frozen=True)
class StudyRecord:
    """A study's identity and job settings, as one search recorded them.

    :param identity: the recorded identity, as a dict (older versions may lack fields).
    :param job: the recorded job settings.
    """

    identity: dict[str, Any]
    job: JobSettings

    @classmethod
    def read(cls, study: optuna.Study) -> StudyRecord | None:
        """Return the record of ``study``, or ``None`` when a search of this version did not write one."""
        identity, job = study.user_attrs.get(IDENTITY_ATTR), study.user_attrs.get(JOB_ATTR)
        if not identity or not job:
            return None
        fields = {field.name for field in dataclasses.fields(JobSettings)}
        if not fields <= set(job):
            return None
        return cls(identity=identity, job=JobSettings(**{name: job[name] for name in fields}))

    def search_config(self, name: str, **runtime: Any) -> SearchConfig:
        """Return the settings a worker runs this search with.

        :param name: the study's name.
        :param runtime: the worker's own settings (``run_dir``, ``storage``, ``device``,
            ``quiet``, ``heartbeat_interval``); ``run_dir`` defaults to the recorded one.
        """
        runtime.setdefault("run_dir", None)
        runtime["run_dir"] = runtime["run_dir"] or Path(self.job.run_dir)
        job = {field_name: getattr(self.job, field_name) for field_name in _CONFIG_FIELDS}
        identity = {key: self.identity[key] for key in ("dataset", "metric", "val_fraction")}
        return SearchConfig(**{**job, **identity, "space": recorded_space(self.identity), "study": name, **runtime})


def write_identity(study: optuna.Study, identity: SearchIdentity) -> None:
    """Record ``identity`` on a new study."""
    study.set_user_attr(IDENTITY_ATTR, dataclasses.asdict(identity))


def write_job(study: optuna.Study, job: JobSettings) -> None:
    """Record the latest command's ``job`` settings (nothing is written when they did not change)."""
    content = dataclasses.asdict(job)
    if study.user_attrs.get(JOB_ATTR) != content:
        study.set_user_attr(JOB_ATTR, content)


def refresh_identity(study: optuna.Study, identity: SearchIdentity) -> None:
    """Record the dataset files' current sizes and times after a resume that matched by content.

    Workers then accept the data as it is now, and the next resume needs no content check.
    """
    recorded = recorded_identity(study)
    if recorded and recorded.get("dataset_fingerprint") != identity.dataset_fingerprint:
        study.set_user_attr(IDENTITY_ATTR, {**recorded, "dataset_fingerprint": identity.dataset_fingerprint})


def recorded_identity(study: optuna.Study) -> dict[str, Any]:
    """Return the identity a study records (empty for a study no search of ours started)."""
    return study.user_attrs.get(IDENTITY_ATTR, {})


def split_seed(study: optuna.Study, default: int) -> int:
    """Return the seed of the study's validation split: the one it was created with.

    :param default: used for a study no search of ours started (no recorded seed).
    """
    seed = recorded_identity(study).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else default


def target_trials(study: optuna.Study, default: int) -> int:
    """Return the trial count the latest ``search`` command asked for (workers follow it)."""
    return int(study.user_attrs.get(JOB_ATTR, {}).get("trials", default))


def write_ranking(study: optuna.Study, ranking: list[dict[str, Any]]) -> None:
    """Record the sources' ranking (best first) on a new study."""
    study.set_user_attr(RANKING_ATTR, ranking)


def recorded_ranking(study: optuna.Study) -> list[dict[str, Any]]:
    """Return the ranking the study records, best first (empty when none was made)."""
    return list(study.user_attrs.get(RANKING_ATTR, []))
