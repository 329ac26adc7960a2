"""Plugin loading and the registry of components they register.

Built-in components load through the same ``kdbench`` entry-point group as third-party
packages, so the built-ins prove the path every contributor uses.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from kdbench import hookspecs
from kdbench.errors import AmbiguousComponentError, PluginError, UnknownComponentError
from kdbench.options import NoOptions, Options
from kdbench.suggest import unknown_name_message

ENTRY_POINT_GROUP = "kdbench"
LOAD_PLUGINS_ENV = "KDBENCH_LOAD_PLUGINS"
TRACE_ENV = "KDBENCH_TRACE_HOOKS"

#: component kind -> the hook that registers it
KINDS = {
    "datasets": "register_datasets",
    "tasks": "register_tasks",
    "frontends": "register_frontends",
    "augmentations": "register_augmentations",
    "teachers": "register_teachers",
    "students": "register_students",
    "losses": "register_losses",
    "metrics": "register_metrics",
    "targets": "register_targets",
    "reporters": "register_reporters",
    "executors": "register_executors",
}

SINGULAR = {kind: kind[:-2] if kind.endswith("sses") else kind[:-1] for kind in KINDS}


@dataclass(frozen=True)
class Provider:
    """Which code provides a component: two plugins may register one name, and a result must
    never be reused, or reported, under an implementation other than the one that computed it."""

    plugin: str  # entry-point name
    distribution: str | None  # the installed package, None for plugins handed to build_registry
    version: str | None
    entry_point: str  # "module" or "module:object" as declared
    cls: str  # "module:QualifiedName" of the factory

    def identity(self) -> dict[str, str | None]:
        """What goes into run keys and provenance."""
        return {"plugin": self.plugin, "distribution": self.distribution, "version": self.version,
                "entry_point": self.entry_point, "class": self.cls}

    def text(self) -> str:
        """One line for an MLflow tag or a message: ``dist 1.0 (plugin, module:Class)``."""
        dist = f"{self.distribution} {self.version}" if self.distribution else "not installed"
        return f"{dist} ({self.plugin}, {self.cls})"


def _qualified_name(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__qualname__)}"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[Options]
    summary: str
    plugin: str
    provider: Provider | None = None

    def build(self, options: Options | dict | None = None, **context: Any) -> Any:
        if not isinstance(options, Options):
            options = self.options.model_validate(options or {})
        return self.factory(options, **context)


@dataclass
class LoadedPlugin:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    entry_point: str = ""


@dataclass
class Registry:
    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[LoadedPlugin] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: plugins that failed to import or to register:
    #: "plugin 'asr' (kdbench 0.1.0)" -> ("failed to load", "ImportError: ...")
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)

    #: every registration, qualified: kind -> "plugin:name" -> Component
    qualified: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    #: names two or more plugins register: kind -> name -> those plugins, in load order
    clashes: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    #: components registered with ``default=True``: kind -> those components, in load order.
    #: A suite that omits a kind's key gets its one default, so the core never spells a
    #: plugin's component name.
    defaults: dict[str, list[Component]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def get(self, kind: str, name: str) -> Component:
        """A component by name, or by ``plugin:name`` when several plugins register the name."""
        if name in self.qualified[kind]:
            return self.qualified[kind][name]
        if name in self.clashes[kind]:
            # results must never be computed, or reused, under another plugin's implementation
            choices = " or ".join(repr(f"{p}:{name}") for p in self.clashes[kind][name])
            owners = " and ".join(repr(p) for p in self.clashes[kind][name])
            raise AmbiguousComponentError(f"{SINGULAR[kind]} {name!r} is registered by both {owners}: "
                                          f"name the one you mean, as {choices}")
        try:
            return self.components[kind][name]
        except KeyError:
            message = unknown_name_message(SINGULAR[kind], name, self.names(kind))
            # A plugin that failed to import registered nothing, so which names it would have
            # provided is unknown; an unknown name is most often one of its, so say why it failed
            # instead of leaving "unknown task" as the only clue (a broken install looks like a typo).
            by_error: dict[str, list[str]] = {}  # one install problem breaks several plugins alike
            for origin, (stage, error) in self.failed.items():
                by_error.setdefault(error, []).append(f"{origin}, which {stage}")
            for error, origins in by_error.items():
                message += f"; it may come from {' or '.join(origins)}: {error}"
            raise UnknownComponentError(message) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def default(self, kind: str) -> Component:
        """The one component registered as ``kind``'s default."""
        claims = self.defaults[kind]
        if not claims:
            raise UnknownComponentError(f"no loaded plugin registers a default {SINGULAR[kind]} "
                                        f"(available: {', '.join(self.names(kind)) or 'none'})")
        if len(claims) > 1:
            owners = " and ".join(repr(c.plugin) for c in claims)
            choices = ", ".join(f"{c.plugin}:{c.name}" for c in claims)
            raise AmbiguousComponentError(f"plugins {owners} both register a default {SINGULAR[kind]} "
                                          f"({choices}): name the one you mean")
        return claims[0]

    def add(self, kind: str, plugin: str, name: str, factory: Callable[..., Any],
            options: type[Options] | None = None, summary: str = "", default: bool = False) -> None:
        if not isinstance(name, str) or not name or ":" in name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} component without a name, or with a ':' in it")
        if not isinstance(default, bool):  # a truthy string would quietly claim the default
            raise PluginError(f"plugin {plugin!r}: {kind} {name!r} default must be True or False, got {default!r}")
        if options is None:
            options = getattr(factory, "Options", NoOptions)
        if not (isinstance(options, type) and issubclass(options, Options)):
            raise PluginError(f"plugin {plugin!r}: {kind} {name!r} options must subclass kdbench.options.Options")
        loaded = next((p for p in self.plugins if p.name == plugin), None)
        provider = Provider(plugin, loaded.distribution if loaded else None, loaded.version if loaded else None,
                            loaded.entry_point if loaded else "", _qualified_name(factory))
        component = Component(kind, name, factory, options, summary or _first_line(factory), plugin, provider)
        self.qualified[kind][f"{plugin}:{name}"] = component
        if default:
            self.defaults[kind].append(component)
            if len(self.defaults[kind]) > 1:  # an error only for a suite that relies on the default
                first = self.defaults[kind][0]
                self.problems.append(f"{kind}: {first.plugin}:{first.name} and {plugin}:{name} are both registered as "
                                     f"the default {SINGULAR[kind]}; a suite that omits it must name one")
        existing = self.components[kind].get(name)
        if existing is not None:
            owners = self.clashes[kind].setdefault(name, [existing.plugin])
            owners.append(plugin)
            self.problems.append(f"{kind} {name!r} is registered by both {existing.plugin!r} and {plugin!r}; "
                                 f"a suite must name one: {existing.plugin}:{name} or {plugin}:{name}")
            return
        self.components[kind][name] = component


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    return sorted(hc.name for hc in (pm.get_hookcallers(plugin) or []) if hc.spec is None)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _selected_entry_points() -> list[importlib.metadata.EntryPoint]:
    # kdbench's own plugins first, then the rest by name, so a name clash resolves the same
    # way on every machine (the built-in keeps its name; the clash is reported)
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                 key=lambda ep: (getattr(ep.dist, "name", "") != "kdbench", getattr(ep.dist, "name", ""), ep.name))
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    if wanted is None:
        return eps
    names = {w.strip() for w in wanted.split(",") if w.strip()}
    return [ep for ep in eps if ep.name in names or (ep.dist and ep.dist.name in names)]


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def build_registry(extra_plugins: list[Any] = ()) -> Registry:
    """Load every selected entry point (one failing import does not stop the rest),
    plus ``extra_plugins`` (objects or modules with hook implementations, for tests)."""
    pm = new_plugin_manager()
    registry = Registry()
    for ep in _selected_entry_points():
        dist = ep.dist
        origin = f"plugin {ep.name!r} (entry point {ep.value!r}" + (f", {dist.name} {dist.version})" if dist else ")")
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take the others down
            error = f"{type(exc).__name__}: {_one_line(exc)}"
            registry.problems.append(f"{origin} failed to load: {error}")
            registry.failed[f"plugin {ep.name!r}" + (f" ({dist.name} {dist.version})" if dist else "")] = \
                ("failed to load", error)
            continue
        unknown = _unknown_hooks(pm, plugin)
        if unknown:  # a typo in one plugin's hook name must not stop the other plugins
            pm.unregister(plugin)
            registry.problems.append(f"{origin} was not loaded: " + "; ".join(
                unknown_name_message("hook", name, sorted(KINDS.values())) for name in unknown))
            continue
        registry.plugins.append(LoadedPlugin(ep.name, dist.name if dist else None, dist.version if dist else None,
                                             entry_point=ep.value))
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        pm.register(plugin, name=name)
        unknown = _unknown_hooks(pm, plugin)
        if unknown:
            raise PluginError(f"plugin {name!r} implements a hook kdbench does not define: " + "; ".join(
                unknown_name_message("hook", n, sorted(KINDS.values())) for n in unknown))
        registry.plugins.append(LoadedPlugin(name, None, None, entry_point=getattr(plugin, "__name__", name)))
    pm.check_pending()  # every plugin with an unknown hook was refused above
    if os.environ.get(TRACE_ENV):
        def before(hook_name, impls, kwargs):
            sys.stderr.write(f"kdbench hook {hook_name} -> {', '.join(i.plugin_name for i in impls)}\n")

        pm.add_hookcall_monitoring(before, lambda outcome, hook_name, impls, kwargs: None)

    by_name = {p.name: p for p in registry.plugins}
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name
            if plugin_name in by_name:
                by_name[plugin_name].hooks.append(hook_name)

            def register(name, factory, options=None, summary="", *, default=False, _kind=kind, _plugin=plugin_name):
                registry.add(_kind, _plugin, name, factory, options, summary, default)

            # call one plugin at a time so each registration is attributed to its plugin
            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            except PluginError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {_one_line(exc)}"
                registry.problems.append(f"plugin {plugin_name!r} failed in {hook_name}: {error}")
                registry.failed.setdefault(f"plugin {plugin_name!r}", (f"failed in {hook_name}", error))
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry
