"""Plugin loading and the registry of components they register.

Built-in components load through the same ``kdbench`` entry-point group as third-party
packages, so the built-ins prove the path every contributor uses.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
import traceback
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
#: set (to anything but "" or "0"): a load problem is printed with the full traceback of its error
TRACEBACK_ENV = "KDBENCH_TRACEBACK"

#: component kind -> the hook that registers it
KINDS = {
    "datasets": "register_datasets",
    "tasks": "register_tasks",
    "frontends": "register_frontends",
    "augmentations": "register_augmentations",
    "compressions": "register_compressions",
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
    #: a problem caused by an exception -> that exception's formatted traceback (the one-line
    #: problem names no file or line; ``KDBENCH_TRACEBACK=1`` or ``kdbench plugins --traceback``
    #: shows this)
    tracebacks: dict[str, str] = field(default_factory=dict)

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


def _undecorated_hooks(plugin: Any) -> list[str]:
    """Why a hook the author wrote is never called: functions of the plugin named like a hook
    but not marked ``@hookimpl`` (pluggy registers only marked ones, and says nothing)."""
    hooks = sorted(KINDS.values())
    found = []
    for name in sorted(dir(plugin)):
        fn = getattr(plugin, name, None)
        if not name.startswith("register_") or not callable(fn) or hasattr(fn, f"{ENTRY_POINT_GROUP}_impl"):
            continue
        if getattr(fn, "__module__", None) not in (getattr(plugin, "__name__", None), type(plugin).__module__):
            continue  # imported from elsewhere (a helper of another module), not this plugin's hook
        if name in hooks:
            found.append(f"{name} is not marked @hookimpl, so kdbench never calls it: put "
                         f"@hookimpl (from kdbench.hookspecs import hookimpl) above it")
        elif close := difflib.get_close_matches(name, hooks, n=1, cutoff=0.8):
            found.append(f"{name} is no kdbench hook and is not marked @hookimpl, so kdbench never calls it: did "
                         f"you mean {close[0]!r}? (rename it, and put @hookimpl above it)")
    return found


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


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
    plugins, dists = sorted({ep.name for ep in eps}), sorted({ep.dist.name for ep in eps if ep.dist})
    unknown = sorted(names - set(plugins) - set(dists))
    if unknown:  # else the plugin asked for is silently absent and a suite fails on "unknown task"
        def why(name: str) -> str:
            close = difflib.get_close_matches(name, plugins + dists, n=3, cutoff=0.5)
            hint = f" did you mean {' or '.join(map(repr, close))}?" if close else ""
            return f"no installed kdbench plugin is called {name!r};{hint}"
        raise PluginError(f"{LOAD_PLUGINS_ENV}={wanted}: " + " ".join(why(n) for n in unknown)
                          + f" installed plugins: {', '.join(plugins) or 'none'} (a distribution's name, "
                          f"{', '.join(map(repr, dists)) or 'none'}, selects all of its plugins)")
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
            registry.tracebacks[registry.problems[-1]] = _traceback(exc)
            registry.failed[f"plugin {ep.name!r}" + (f" ({dist.name} {dist.version})" if dist else "")] = \
                ("failed to load", error)
            continue
        unknown = _unknown_hooks(pm, plugin)
        if unknown:  # a typo in one plugin's hook name must not stop the other plugins
            pm.unregister(plugin)
            registry.problems.append(f"{origin} was not loaded: " + "; ".join(
                unknown_name_message("hook", name, sorted(KINDS.values())) for name in unknown))
            continue
        for problem in _undecorated_hooks(plugin):
            registry.problems.append(f"{origin}: {problem}")
        registry.plugins.append(LoadedPlugin(ep.name, dist.name if dist else None, dist.version if dist else None,
                                             entry_point=ep.value))
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        pm.register(plugin, name=name)
        unknown = _unknown_hooks(pm, plugin)
        if unknown:
            raise PluginError(f"plugin {name!r} implements a hook kdbench does not define: " + "; ".join(
                unknown_name_message("hook", n, sorted(KINDS.values())) for n in unknown))
        registry.problems += [f"plugin {name!r}: {problem}" for problem in _undecorated_hooks(plugin)]
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
                registry.tracebacks[registry.problems[-1]] = _traceback(exc)
                registry.failed.setdefault(f"plugin {plugin_name!r}", (f"failed in {hook_name}", error))
    for loaded in registry.plugins:
        if not loaded.hooks and not any(f"plugin {loaded.name!r}" in p for p in registry.problems):
            registry.problems.append(f"plugin {loaded.name!r} implements no kdbench hook, so it registers nothing "
                                     "(a hook is a function named register_<kind>, marked @hookimpl)")
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


# ---- what a component takes and exposes (`kdbench plugins --verbose`, `kdbench plugin show`) ----

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <=",
           "multiple_of": "multiple of"}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


def describe_options(options: type[Options]) -> list[dict[str, str]]:
    """Every option of a component: ``name``, ``type``, ``default`` ("required" when it has
    none), ``constraints`` (``>= 8``) and ``description``, read from its pydantic model."""
    rows = []
    for name, f in options.model_fields.items():
        if f.is_required():
            default = "required"
        else:
            value = f.default_factory() if f.default_factory is not None else f.default
            default = repr(value.model_dump() if isinstance(value, Options) else value)
        bounds = [f"{sign} {getattr(m, k)}" for m in f.metadata for k, sign in _BOUNDS.items()
                  if getattr(m, k, None) is not None]
        rows.append({"name": name, "type": _type_name(f.annotation), "default": default,
                     "constraints": ", ".join(bounds), "description": f.description or ""})
    return rows


def hidden_layer_dims(component: Component, options: Options | dict | None = None) -> dict[str, int | None] | None:
    """A model's hidden layers and their widths at ``options`` (default: its defaults), as a hint
    loss names them: from the factory's ``hidden_layers_for(options)`` when it declares them
    (widths then unknown: None), else from the model built on PyTorch's meta device (no memory,
    no weights) for a stand-in ModelSpec; widths may follow that spec. None when it cannot be
    built so (options without defaults, a model that needs real inputs)."""
    import torch

    from kdbench.interfaces import ModelSpec

    try:
        if not isinstance(options, Options):
            options = component.options.model_validate(options or {})
        declared = getattr(component.factory, "hidden_layers_for", None)
        if declared is not None:
            return {name: None for name in declared(options)}
    except Exception:  # a listing must not fail on one model; the kit checks the real thing
        return None
    # stand-in sizes: features to characters (ASR), and phoneme ids to 80 mel bands (TTS), whose
    # models refuse any other output size
    for spec in (ModelSpec(input_dim=80, output_dim=32), ModelSpec(input_dim=64, output_dim=80)):
        try:
            with torch.device("meta"):
                model = component.factory(options, model_spec=spec)
            return {name: int(dim) for name, dim in dict(model.hidden_dims).items()}
        except Exception:
            continue
    return None


MODEL_KINDS = ("teachers", "students")


def describe(component: Component) -> str:
    """What a suite author needs to use ``component``, in a few plain lines: where it comes
    from, its summary, every option (type, default, bounds, description) and, for a model, the
    hidden layers a hint loss may name, with their widths."""
    c = component
    source = c.provider.text() if c.provider else c.plugin
    lines = [f"{SINGULAR[c.kind]} {c.name}: {source}"]
    if c.summary:
        lines.append(f"  {c.summary}")
    rows = describe_options(c.options)
    if rows:
        lines.append("  options:")
        width = max(len(r["name"]) for r in rows), max(len(r["type"]) for r in rows)
        for r in rows:
            extra = "; ".join(x for x in (r["constraints"], r["description"]) if x)
            lines.append(f"    {r['name']:<{width[0]}}  {r['type']:<{width[1]}}  = {r['default']}"
                         + (f"  ({extra})" if extra else ""))
    else:
        lines.append("  options: none")
    if c.kind in MODEL_KINDS:
        layers = hidden_layer_dims(c)
        if layers is None:
            lines.append("  hidden layers: known once built with the suite's data (not buildable on its own)")
        elif not layers:
            lines.append("  hidden layers: none (a hint loss cannot read this model)")
        else:
            shown = ", ".join(name if dim is None else f"{name} ({dim})" for name, dim in layers.items())
            lines.append(f"  hidden layers at the default options (name (width)): {shown}")
    return "\n".join(lines)
