"""``automl-transfer predict``: classify images with the best model of a run, streaming the results."""

from __future__ import annotations

import argparse
import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from automl_transfer.commands.arguments import positive_int
from automl_transfer.contract.class_names import printable


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="classify images with the best model of a search",
        description=(
            "Print one line per image as soon as its batch is classified: PATH<TAB>LABEL<TAB>SCORE, or with --json "
            'one JSON object {"path", "label", "score"} per line. Folders are searched recursively for image files. '
            "A progress bar shows on stderr when it is a terminal."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory (or its best/ directory)")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders of them")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="report each unreadable image on its own line on stderr and go on (default: stop at the first one)",
    )


def run(args: argparse.Namespace) -> int:
    """Classify ``args.images`` with the best model in ``args.run_dir``, printing each batch's results at once.

    :returns: 0 (also when ``--skip-bad-images`` left images out; stderr says which).
    :raises AutoMLTransferError: no best model, a missing image, an unreadable image without
        ``--skip-bad-images`` (the results before it are printed), a bad device.
    """
    from automl_transfer.inference.predictor import expand_inputs, load_model

    model = load_model(args.run_dir, device=args.device)
    images = expand_inputs(args.images)
    # A file or class name that is not valid UTF-8 is printed as the file system has it, byte for byte
    # (stdout is a text file of Python's own unless a program embedding the CLI replaced it).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")
    skipped = 0
    with _progress(len(images)) as (advance, note):

        def skip(error: Any) -> None:
            nonlocal skipped
            skipped += 1
            note(f"skipped unreadable image {error.path}: {error.reason}")
            advance(1)

        for batch in model.predict_batches(images, args.batch_size, skip if args.skip_bad_images else None):
            for prediction in batch:
                print(_format(prediction, args.json))
            sys.stdout.flush()
            advance(len(batch))
    if skipped:
        print(f"skipped {skipped} unreadable image(s) of {len(images)}", file=sys.stderr)
    return 0


def _format(prediction: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps({"path": prediction.path, "label": prediction.label, "score": prediction.score})
    # A tab, a newline or an escape sequence in a name must not break the line or reach the terminal.
    return f"{printable(prediction.path)}\t{printable(prediction.label)}\t{prediction.score:.4f}"


@contextmanager
def _progress(total: int) -> Iterator[tuple[Callable[[int], None], Callable[[str], None]]]:
    """Yield ``(advance, note)``: a progress bar over ``total`` images on a terminal's stderr, plain lines otherwise.

    ``advance(n)`` moves the bar on by ``n`` images; ``note(text)`` prints one line on stderr
    above the bar.
    """
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        yield (lambda count: None), (lambda text: print(text, file=sys.stderr, flush=True))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # stdout stays plain: the results are printed there, not through the live display.
    with Progress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
        task = bar.add_task("images", total=total)
        yield (lambda count: bar.advance(task, count)), (lambda text: bar.console.print(text, markup=False))

