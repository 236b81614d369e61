"""``automl-transfer demo``: the offline end-to-end demo on scikit-learn's digits (see :mod:`automl_transfer.demo.demo`)."""

from __future__ import annotations

import argparse

from automl_transfer.demo.settings import add_arguments, settings_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand and its flags."""
    parser = subparsers.add_parser(
        "demo",
        help="offline demo: pretrain on digits 0-4, search how to transfer to 5-9, compare with training from scratch",
        description=(
            "Train two tiny source models on digits 0-4 (cached), search how to transfer them to digits 5-9 "
            "with a few labels per digit, compare the best transferred and from-scratch configurations on a "
            "held-out test set, and classify a few held-out images with the best model."
        ),
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 whatever the verdict."""
    import optuna

    from automl_transfer.demo.demo import run_demo

    settings = settings_from_args(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_demo(settings)
    return 0
