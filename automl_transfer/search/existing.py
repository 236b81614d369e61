"""Which search a run dir (or an RDB storage, by study name) already holds: resume it, replace it, or refuse.

A run dir holds one search. Its study is resumed when it records the same identity (dataset,
space, metric, ...), whatever its name; a different one is refused unless ``--force-new``
replaces it. Studies are created and recorded under the run dir's claim lock, so a second
``search`` started at the same moment on a fresh run dir finds the first one's study there
and joins it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import optuna

from automl_transfer.errors import RunDirError
from automl_transfer.search.record import SearchIdentity, recorded_identity
from automl_transfer.storage.checkpoint import BEST_LINK

if TYPE_CHECKING:
    from automl_transfer.search.config import SearchConfig


def existing_study(
    storage: optuna.storages.BaseStorage | None,
    config: SearchConfig,
    identity: SearchIdentity,
    load_study: Callable[[str], optuna.Study],
    content: Callable[[], str],
    settled: bool = True,
) -> tuple[optuna.Study | None, list[str]]:
    """Find the search ``storage`` already holds for ``config``.

    :param storage: the search's storage, or ``None`` when it has none yet (nothing found).
    :param identity: what the search is; a study recording another identity is refused.
    :param load_study: opens a study of ``storage`` by name.
    :param content: returns the dataset's content fingerprint (see :meth:`SearchIdentity.differences`).
    :param settled: whether the claim lock is held, under which studies are created and
        recorded; without it a study that records no identity yet may be one another search
        is creating this moment, and counts as none (the caller checks again under the lock).
    :returns: ``(study, [])`` to resume; ``(None, names)`` when the studies ``names`` hold a
        different search and ``config.force_new`` replaces them; ``(None, [])`` when there is none.
    :raises RunDirError: a different search without ``force_new``.
    """
    if storage is None:
        return None, []
    names = optuna.get_all_study_names(storage)
    if config.study in names:
        candidates = [config.study]
    else:
        candidates = names if config.storage is None else []
    studies = [load_study(name) for name in candidates]
    if not settled and any(not recorded_identity(study) for study in studies):
        return None, []
    differences: list[str] = []
    for study in studies:
        different = identity.differences(recorded_identity(study), content)
        differences += [key for key in different if key not in differences]
        if len(studies) == 1 and not differences:
            return study, []
    if not candidates or config.force_new:
        return None, candidates
    found = ", ".join(repr(name) for name in candidates)
    what = f"a different {', '.join(differences)}" if differences else "several searches"
    trials = sum(len(study.trials) for study in studies)
    model = " and its best model" if (config.run_dir / BEST_LINK).is_symlink() else ""
    raise RunDirError(f"run dir {config.run_dir} holds study {found} with {what}; pass --force-new to "
                      f"delete it ({trials} trial(s){model}) and start over, or choose another --run-dir")
