"""The built-in console observer: the search's progress on stderr and its leaderboard on stdout.

It is a plugin like any other (entry point ``console``), built on the lifecycle hooks a third
party's observer uses; ``--disable-plugins console`` silences it. What it shows:

- on a terminal, a live progress display on stderr: a bar over the trials with the best value
  so far, a line for the running trial (epoch k/N, its latest metric, training images/s), and a
  line for work outside trials (decoding images, caching features, refitting);
- off a terminal (a pipe, a log file, CI), plain lines on stderr instead, so that a log shows
  signs of life: one per epoch (``trial 3  epoch 2/5  accuracy=0.9312  1,480 img/s``), one when
  a phase of work outside trials starts, and one every :data:`PHASE_LINE_SECONDS` while it runs;
- one line per finished trial on stderr, ``trial N: accuracy=0.9312 [source=..., lr=...]``
  with the trial's searched parameters, on a terminal or not;
- the leaderboard on stdout when the search ends, and the final best model's scores on
  held-out images when the search scored it (``summary["test"]``).

The first line says the plan: how many trials, which sources, on which device. With ``quiet``
nothing is printed. A worker process (``automl-transfer worker``) prints its trial and epoch
lines and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from automl_transfer.plugin import hookimpl

#: Off a terminal, the seconds between two progress lines of one phase of work outside trials.
PHASE_LINE_SECONDS = 30.0


class ConsoleObserver:
    """The state of the console output of the search running in this process."""

    def __init__(self) -> None:
        self.quiet = False
        self.show_progress = False
        self.metric = "value"
        self.study: Any = None
        self.console: Any = None
        self.progress: Any = None
        self.trials_task: Any = None
        self.trial_task: Any = None
        self.phase_task: Any = None
        self.epoch_started = 0.0
        self.trial_epochs: int | None = None
        self.phase_line_at = 0.0

    @hookimpl
    def search_start(self, run_dir, study, settings):
        """Print the plan (trials, sources, device, run dir) and start the trials bar (not in workers, not quiet)."""
        self.stop_display()
        self.quiet = bool(settings.get("quiet"))
        self.metric = settings.get("metric", "value")
        self.study = study
        self.show_progress = not self.quiet and not settings.get("worker") and settings.get("workers", 1) == 1
        if self.quiet or settings.get("worker"):
            return
        # Imported when a search starts, not when the plugins load: the leaderboard's module reads
        # the study's records, which imports torch, and loading plugins must not (decoding ahead
        # overlaps torch's import, and `plugins --json` stays fast).
        from automl_transfer.plugin_observers import trial_counts

        counts = trial_counts(study)
        done = counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]
        sources = settings.get("sources") or []
        self.stderr().print(
            f"search: {settings.get('trials')} trials in all (--trials; {done} finished already), "
            f"{len(sources)} source(s) {', '.join(sources)}, on {settings.get('resolved_device')}, "
            f"in {run_dir}",
            highlight=False, markup=False, soft_wrap=True,
        )
        if self.show_progress:
            self.trials_task = self.display().add_task("trials", total=settings.get("trials"), completed=done)

    @hookimpl
    def search_phase(self, phase, done, total):
        """Show work outside trials: a live line on a terminal; otherwise a line at its start and every 30 s.

        Worker processes (and a parent of workers) never draw a live display: several would
        overwrite each other on the terminal they share. Off a terminal, a phase before the
        search started prints nothing: whether the search is quiet is not known yet.
        """
        if self.quiet:
            return
        if not self.stderr().is_terminal or (self.study is not None and not self.show_progress):
            if self.study is None:
                return
            now = time.monotonic()
            if done == 0:
                self.phase_line_at = now
                self.console.print(f"{phase} ...", highlight=False, markup=False, soft_wrap=True)
            elif now - self.phase_line_at >= PHASE_LINE_SECONDS and (total is None or done < total):
                self.phase_line_at = now
                progress = f"{done}" if total is None else f"{done}/{total}"
                self.console.print(f"{phase}: {progress}", highlight=False, markup=False, soft_wrap=True)
            return
        self.display()
        if self.phase_task is None:
            self.phase_task = self.progress.add_task(phase, total=total, completed=done)
        self.progress.update(self.phase_task, description=phase, completed=done, total=total)
        self.progress.refresh()
        if total is not None and done >= total:
            self.progress.remove_task(self.phase_task)
            self.phase_task = None
            self.stop_display_if_idle()

    @hookimpl
    def trial_start(self, trial, params):
        """Add the running trial's line."""
        self.epoch_started = time.monotonic()
        self.trial_epochs = params.get("epochs")
        if self.show_progress and self.stderr().is_terminal:
            self.trial_task = self.progress.add_task(
                f"trial {trial.number}  epoch 0/{self.trial_epochs}", total=self.trial_epochs
            )
            self.progress.refresh()

    @hookimpl
    def epoch_end(self, trial, epoch, metrics):
        """Update the running trial's line: epoch, latest metric, training images/s (a plain line off a terminal)."""
        if self.quiet or self.study is None:
            return
        now = time.monotonic()
        seconds, self.epoch_started = now - self.epoch_started, now
        speed = metrics.get("train_images", 0) / seconds if seconds > 0 else 0.0
        key = "val_loss" if self.metric == "loss" else self.metric
        value = metrics.get(key)
        shown = f"{self.metric}={value:.4f}" if isinstance(value, float) else ""
        description = f"trial {trial.number}  epoch {epoch}/{self.trial_epochs}  {shown}  {speed:,.0f} img/s"
        if self.trial_task is not None:
            self.progress.update(self.trial_task, completed=epoch, description=description)
            self.progress.refresh()  # epochs can be shorter than the display's refresh period
        elif not self.stderr().is_terminal:
            self.stderr().print(description, highlight=False, markup=False, soft_wrap=True)

    @hookimpl
    def trial_end(self, trial, state, value, reason):
        """Print the trial's line and move the bar on."""
        if self.trial_task is not None:
            self.progress.remove_task(self.trial_task)
            self.trial_task = None
        if not self.quiet:
            outcome = f"{self.metric}={value:.4f}" if value is not None else state.name.lower()
            if reason:
                outcome += f" ({reason})"
            line = f"trial {trial.number}: {outcome}  [{_describe(trial)}]"
            (self.progress.console if self.progress is not None else self.stderr()).print(
                line, highlight=False, markup=False, soft_wrap=True
            )
        if self.show_progress and self.trials_task is not None:
            self.progress.update(self.trials_task, advance=1, description=self._best())

    @hookimpl
    def search_end(self, run_dir, study, summary):
        """Remove the live display; print the leaderboard and the held-out score on stdout (not with ``quiet``)."""
        self.stop_display()
        if not self.quiet:
            from automl_transfer.plugin_observers import leaderboard, wide_console

            console = wide_console()
            console.print(leaderboard(study, self.metric, console, run_dir=run_dir))
            test = summary.get("test")
            if test:
                where = (f"the test split of {test['dataset']}" if test["split"] == "test"
                         else f"all images of {test['dataset']}")
                console.print(
                    f"best model (trial {test['trial']}) on held-out images: accuracy {test['accuracy']:.4f}, "
                    f"macro-F1 {test['macro_f1']:.4f} on {where} ({test['n_images']} images)",
                    highlight=False, markup=False, soft_wrap=True,
                )
        self.study = None
        self.quiet = False

    def stderr(self) -> Any:
        """Return the console on stderr."""
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True)
        return self.console

    def display(self) -> Any:
        """Return the live display on stderr, starting it when needed."""
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.stderr(),
                transient=True,
            )
            self.progress.start()
        return self.progress

    def stop_display(self) -> None:
        """Remove the live display, if any."""
        if self.progress is not None:
            self.progress.stop()
        self.progress = self.trials_task = self.trial_task = self.phase_task = None

    def stop_display_if_idle(self) -> None:
        """Remove the live display when it shows nothing any more (a phase before the search started)."""
        if self.progress is not None and not self.progress.tasks:
            self.stop_display()

    def _best(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return "no complete trial yet"
        return f"best {self.metric}={best.value:.4f} (trial {best.number})"


def _describe(trial: Any) -> str:
    """The trial's source and searched parameters, ``name=value`` comma-separated."""
    params = trial.user_attrs.get("params", {})
    shown = {"source": params.get("source")} if params.get("source") else {}
    shown.update(trial.params)
    return ", ".join(f"{name}={_format(value)}" for name, value in shown.items())


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


#: The plugin object the entry point names.
observer = ConsoleObserver()
