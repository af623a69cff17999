"""The plugin manager: finds, loads and guards prunefw plugins.

Nothing here runs at ``import prunefw``. A :class:`PluginManager` is built when
criteria are first needed (see :func:`prunefw.registry.default_registry`), or
explicitly by code and tests that want their own, isolated one::

    pm = PluginManager(environ={"PRUNEFW_DISABLE_PLUGIN_AUTOLOAD": "1"})
    pm.register(my_plugin_module)

Environment switches (read when a manager is built):

* ``PRUNEFW_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry points at all (the
  built-in criteria and explicitly registered plugins still work).
* ``PRUNEFW_DISABLED_PLUGINS=a,b``: block the entry points named ``a`` and ``b``.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from prunefw import hookspecs
from prunefw._version import __version__
from prunefw.errors import PluginError, PluginLoadError

__all__ = [
    "BUILTIN_PLUGIN_NAME",
    "DISABLED_PLUGINS_ENV",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginManager",
]

#: Entry-point group third-party distributions register their plugin under.
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: Set to ``1``/``true``/``yes``/``on`` to turn entry-point loading off.
DISABLE_AUTOLOAD_ENV = "PRUNEFW_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated entry-point names to block.
DISABLED_PLUGINS_ENV = "PRUNEFW_DISABLED_PLUGINS"
#: Name under which the built-in criteria plugin is registered.
BUILTIN_PLUGIN_NAME = "prunefw.builtin"

Status = Literal["active", "blocked", "not loaded"]


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from and whether it is in use.

    Attributes:
        name: The plugin's name (for entry points: the entry point's name).
        distribution: Name of the distribution that provides it; ``None`` for
            plugins registered in-process.
        version: That distribution's version, or ``None``.
        entry_point: The entry point's value (``"package.module"``), or ``None``.
        status: ``"active"`` (registered), ``"blocked"`` (by
            ``PRUNEFW_DISABLED_PLUGINS`` or :meth:`PluginManager.block`) or
            ``"not loaded"`` (entry-point loading is disabled).
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: Status = "active"

    @property
    def origin(self) -> str:
        """A human-readable origin: ``"entry point 'x' (dist 1.0)"`` or ``"plugin 'x'"``."""
        kind = "plugin" if self.entry_point is None else "entry point"
        if self.distribution is None:
            return f"{kind} {self.name!r}"
        return f"{kind} {self.name!r} of distribution {self.distribution} {self.version}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager:
    """A typed wrapper around :class:`pluggy.PluginManager` for prunefw.

    Args:
        autoload: Load plugins from the ``prunefw`` entry-point group. ``None``
            (default) reads ``PRUNEFW_DISABLE_PLUGIN_AUTOLOAD`` from ``environ``.
        disabled: Entry-point names to block. ``None`` (default) reads
            ``PRUNEFW_DISABLED_PLUGINS`` from ``environ``.
        environ: The environment to read switches from; defaults to ``os.environ``.
        path: Directories to search for installed distributions (and their entry
            points); defaults to ``sys.path``.

    Example:
        >>> from prunefw.plugin_manager import PluginManager
        >>> pm = PluginManager(autoload=False)
        >>> [info.name for info in pm.plugins() if info.status == "active"]
        ['prunefw.builtin']
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        disabled: Iterable[str] | None = None,
        environ: Mapping[str, str] | None = None,
        path: Iterable[str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.autoload = not _truthy(env.get(DISABLE_AUTOLOAD_ENV)) if autoload is None else autoload
        if disabled is None:
            disabled = env.get(DISABLED_PLUGINS_ENV, "").split(",")
        self._path = None if path is None else [str(p) for p in path]
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._entrypoints_loaded = False
        for name in disabled:
            if name.strip() == BUILTIN_PLUGIN_NAME:
                raise PluginError(
                    f"{DISABLED_PLUGINS_ENV} names {BUILTIN_PLUGIN_NAME!r}, prunefw's own plugin "
                    "(the built-in criteria and layer types), which cannot be disabled; remove "
                    f"it from {DISABLED_PLUGINS_ENV} (it lists entry-point names of installed "
                    "plugins)"
                )
            if name.strip():
                self.block(name.strip())
        from prunefw import builtin

        self._register(builtin, PluginInfo(BUILTIN_PLUGIN_NAME, "prunefw", __version__))

    @property
    def hook(self) -> Any:
        """Pluggy's hook relay (``pm.hook.prunefw_register_criteria()``)."""
        return self._pm.hook

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying :class:`pluggy.PluginManager`."""
        return self._pm

    def block(self, name: str) -> None:
        """Block the plugin ``name``: unregister it if present, never load it.

        Args:
            name: A plugin or entry-point name.
        """
        self._pm.set_blocked(name)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (usually a module) in-process.

        Args:
            plugin: An object with ``@hookimpl`` functions.
            name: Its name; defaults to pluggy's canonical name (module name).

        Returns:
            The name it was registered under.

        Raises:
            PluginError: The plugin is blocked, already registered, or its hook
                implementations do not match the specifications.
        """
        info = PluginInfo(name=name or self._pm.get_canonical_name(plugin))
        return self._register(plugin, info)

    def _register(self, plugin: object, info: PluginInfo) -> str:
        if self._pm.is_blocked(info.name):
            raise PluginError(f"{info.origin} is blocked and cannot be registered")
        try:
            registered = self._pm.register(plugin, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"{info.origin} could not be registered: {exc}") from exc
        if registered is None:  # pragma: no cover - pluggy returns None only when blocked
            raise PluginError(f"{info.origin} is blocked and cannot be registered")
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(plugin)
            raise PluginError(
                f"{info.origin} implements a hook prunefw does not define: {exc}. "
                f"Known hooks: {', '.join(self.hook_names())}"
            ) from exc
        self._infos[registered] = info
        return registered

    def _info(self, name: str) -> PluginInfo:
        # Plugins registered on the pluggy manager directly have no recorded origin.
        return self._infos.get(name) or PluginInfo(name)

    def hook_names(self) -> list[str]:
        """Return the names of all hook specifications, sorted."""
        return sorted(name for name in dir(hookspecs) if name.startswith("prunefw_"))

    def _entry_points(
        self, *, clash_is_error: bool = True
    ) -> list[tuple[importlib.metadata.EntryPoint, PluginInfo]]:
        """The ``prunefw`` entry points of the installed distributions, by name.

        Args:
            clash_is_error: Raise when two distributions declare one name (they
                cannot both be loaded); if false, list both (for a listing of what is
                installed when nothing is loaded).
        """
        found: dict[str, tuple[importlib.metadata.EntryPoint, PluginInfo]] = {}
        clashes: list[tuple[importlib.metadata.EntryPoint, PluginInfo]] = []
        dists = (
            importlib.metadata.distributions()
            if self._path is None
            else importlib.metadata.distributions(path=self._path)
        )
        for dist in dists:
            dist_name = dist.metadata["Name"]
            for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
                info = PluginInfo(
                    name=ep.name,
                    distribution=dist_name,
                    version=dist.version,
                    entry_point=ep.value,
                )
                if ep.name in found:
                    other = found[ep.name][1]
                    if other.distribution == dist_name or self._pm.is_blocked(ep.name):
                        continue  # the same distribution seen twice on sys.path, or blocked
                    if not clash_is_error:
                        clashes.append((ep, info))
                        continue
                    raise PluginError(
                        f"two distributions declare the prunefw entry point {ep.name!r}: "
                        f"{other.distribution} {other.version} ({other.entry_point}) and "
                        f"{dist_name} {dist.version} ({ep.value}); uninstall one or block "
                        f"it with {DISABLED_PLUGINS_ENV}={ep.name}"
                    )
                found[ep.name] = (ep, info)
        return [found[name] for name in sorted(found)] + clashes

    def load_entrypoints(self) -> None:
        """Load every plugin of the ``prunefw`` entry-point group, once.

        Does nothing if autoload is disabled. Blocked entry points are skipped.

        Raises:
            PluginLoadError: Importing an entry point failed; the message names the
                entry point and its distribution, the cause is chained.
            PluginError: A loaded plugin could not be registered.
        """
        if self._entrypoints_loaded or not self.autoload:
            return
        for ep, info in self._entry_points():
            if self._pm.is_blocked(ep.name) or self._pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit from a plugin is its failure too
                raise PluginLoadError(
                    f"could not import prunefw plugin {info.origin} ({ep.value}): "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or block it with "
                    f"{DISABLED_PLUGINS_ENV}={ep.name}"
                ) from exc
            self._register(plugin, info)
        self._entrypoints_loaded = True

    def plugins(self) -> list[PluginInfo]:
        """Describe every known plugin: registered, blocked, or not loaded.

        Entry points are loaded first (unless autoload is disabled), so the
        statuses are final.

        Returns:
            One :class:`PluginInfo` per plugin, registered ones first (in order of
            registration), then entry points that are blocked or not loaded.
        """
        self.load_entrypoints()
        result = [
            self._info(name) for name, plugin in self._pm.list_name_plugin() if plugin is not None
        ]
        for _, info in self._entry_points(clash_is_error=self.autoload):
            if self._pm.has_plugin(info.name):
                continue
            status: Status = "blocked" if self._pm.is_blocked(info.name) else "not loaded"
            result.append(
                PluginInfo(info.name, info.distribution, info.version, info.entry_point, status)
            )
        return result

    def call_per_plugin(self, hook_name: str) -> list[tuple[Any, PluginInfo]]:
        """Call one hook on every plugin separately, attributing each result.

        Entry points are loaded first (unless autoload is disabled).

        Args:
            hook_name: A hook specification's name, e.g. ``"prunefw_register_criteria"``.

        Returns:
            ``(result, info)`` pairs, one per implementation, in registration order.

        Raises:
            PluginError: An implementation raised; the message names its plugin.
        """
        self.load_entrypoints()
        caller = getattr(self._pm.hook, hook_name)
        results = []
        for impl in caller.get_hookimpls():
            info = self._info(impl.plugin_name)
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"{info.origin}: {hook_name} must not be a wrapper hook")
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"{info.origin} raised in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
            results.append((result, info))
        return results
