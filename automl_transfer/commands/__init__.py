"""Subcommands of the ``automl-transfer`` CLI, one module each.

Every module named in :data:`COMMAND_MODULES` exposes ``add_parser(subparsers) -> None``,
which adds its subparser, and ``run(args) -> int``, which carries the command out and
returns the exit code. :mod:`automl_transfer.cli` imports them in this order.
"""

#: The command modules under ``automl_transfer.commands``, in ``--help`` order.
COMMAND_MODULES = ("demo", "search", "rank", "worker", "predict", "evaluate", "export", "report", "repair", "plugins")
