"""The kit's pytest plugin: its fixtures. The only module of the kit that imports pytest.

Loaded by ``pytest_plugins = ["prunefw.testing"]`` in a ``conftest.py`` (the
package's ``pytest_configure`` hook registers this module), or directly with
``pytest_plugins = ["prunefw.testing.pytest_plugin"]``.
"""

from __future__ import annotations

import pytest

from prunefw.plugin_manager import PluginManager

__all__ = ["prunefw_plugin_manager"]


@pytest.fixture
def prunefw_plugin_manager() -> PluginManager:
    """A fresh :class:`~prunefw.plugin_manager.PluginManager`, as users get it.

    It honours ``PRUNEFW_DISABLE_PLUGIN_AUTOLOAD`` and ``PRUNEFW_DISABLED_PLUGINS``;
    entry points load on first use. Available with
    ``pytest_plugins = ["prunefw.testing"]``.
    """
    return PluginManager()
