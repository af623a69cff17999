"""``prunefw plugins``: list plugins, their distributions, criteria and status."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from prunefw._table import format_table
from prunefw.plugin_manager import DISABLE_AUTOLOAD_ENV, DISABLED_PLUGINS_ENV, PluginManager
from prunefw.registry import CriterionRegistry

__all__ = ["add_parser", "collect", "run"]


def collect(plugin_manager: PluginManager) -> dict[str, Any]:
    """Describe every plugin known to ``plugin_manager`` (loading entry points if enabled).

    Args:
        plugin_manager: The manager to ask.

    Returns:
        ``{"autoload": bool, "plugins": [{"name", "distribution", "version",
        "entry_point", "status", "criteria"}, ...]}``. Criteria are listed for active
        plugins only (blocked or not loaded ones are never imported).

    Example:
        >>> from prunefw.plugin_manager import PluginManager
        >>> collect(PluginManager(autoload=False))["plugins"][0]["criteria"]
        ['ln-structured', 'magnitude', 'percentile', 'random', 'row-magnitude']
    """
    registry = CriterionRegistry.from_plugin_manager(plugin_manager)
    provided: dict[str, list[str]] = defaultdict(list)
    for name in registry.names():
        provided[registry.entry(name).plugin.name].append(name)
    return {
        "autoload": plugin_manager.autoload,
        "plugins": [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "status": info.status,
                "criteria": provided.get(info.name, []),
            }
            for info in plugin_manager.plugins()
        ],
    }


def _table(data: dict[str, Any]) -> str:
    rows = [("plugin", "distribution", "status", "criteria")]
    for plugin in data["plugins"]:
        dist = plugin["distribution"] or "-"
        if plugin["version"]:
            dist = f"{dist} {plugin['version']}"
        rows.append((plugin["name"], dist, plugin["status"], ", ".join(plugin["criteria"]) or "-"))
    state = "enabled" if data["autoload"] else f"disabled ({DISABLE_AUTOLOAD_ENV})"
    return (
        f"{format_table(rows)}\n\n"
        f"entry-point autoload: {state}; block plugins with {DISABLED_PLUGINS_ENV}=a,b"
    )


def run(args: argparse.Namespace) -> int:
    """Print the plugin listing; return the exit code."""
    data = collect(PluginManager())
    print(json.dumps(data, indent=2) if args.json else _table(data))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``plugins`` sub-command to ``commands``."""
    parser = commands.add_parser(
        "plugins", help="list plugins with their distribution, criteria and status"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
