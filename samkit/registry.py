"""Name -> entry tables: the one registry of every name samkit takes with options (timm-style).

Datasets, models, optimizers, cadences, scopes, bases and executions are each a :class:`Registry`;
specs are written in the one language of :mod:`samkit.spec` (``name:key=value,...``). An entry
knows its options and their defaults (its constructor's signature: :meth:`Registry.options`) and
its docs (:meth:`Registry.summary`, the first paragraph of its docstring unless given), so the
command line's choices and help, the run config's checks and the API index are written from here.

A name registered with ``prefix=True`` is a family that takes a sub-name after a colon:
``"timm:resnet18"`` calls the ``timm`` entry with ``name="resnet18"``, ``"glue:sst2"`` the ``glue``
entry with ``task="sst2"``. A preset is a name that stands for a spec (the cadence ``cheap`` for
``drift:k=4``). Unknown names, unknown options and options of the wrong type (checked against the
entry's type hints) fail with a :class:`SamkitError` that says what is accepted.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from samkit import spec as specs
from samkit.errors import SamkitError

F = TypeVar("F")  # what an entry is: a constructor (datasets, models, cadences) or a record (optimizers)

REQUIRED = inspect.Parameter.empty  # the "default" of an option that has none (it must be given)


class Registry(Generic[F]):
    """Entries of one ``kind`` (``"model"``, ``"dataset"``, ``"optimizer"``, ``"cadence"``, ...);
    families pass their sub-name as ``sub``. Names list sorted, or in registration order with
    ``ordered=True``. ``target`` maps an entry to the callable whose signature lists its options
    (default: the entry itself; None for an entry without options)."""

    def __init__(
        self,
        kind: str,
        sub: str | None = None,
        *,
        ordered: bool = False,
        target: Callable[[F], Callable[..., Any] | None] | None = None,
    ) -> None:
        self.kind, self.sub, self.ordered = kind, sub, ordered
        self._entries: dict[str, F] = {}
        self._families: set[str] = set()
        self._summaries: dict[str, str] = {}
        self._presets: dict[str, str] = {}
        self._target = target

    def add(self, name: str, entry: F, *, prefix: bool = False, summary: str | None = None) -> F:
        """Register ``entry`` under ``name`` (a name is registered once); ``summary`` is its one-line
        doc (default: the first paragraph of the entry's docstring)."""
        if name in self._entries or name in self._presets:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if prefix and self.sub is None:
            raise ValueError(f"the {self.kind} registry has no families")
        self._entries[name] = entry
        if prefix:
            self._families.add(name)
        if summary is not None:
            self._summaries[name] = summary
        return entry

    def add_preset(self, name: str, spec: str, summary: str) -> None:
        """Register ``name`` as a spelling of ``spec`` (a spec of a registered name)."""
        if name in self._entries or name in self._presets:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if specs.split_name(spec)[0] not in self._entries:
            raise ValueError(f"preset {name!r}: {spec!r} is not a spec of a registered {self.kind}")
        self._presets[name] = spec
        self._summaries[name] = summary

    def register(self, name: str, *, prefix: bool = False) -> Callable[[F], F]:
        """Decorator form of :meth:`add` (for constructors)."""

        def decorate(fn: F) -> F:
            return self.add(name, fn, prefix=prefix)

        return decorate

    def names(self) -> list[str]:
        """Registered names (presets last); families shown as ``family:<sub>``."""
        shown = [f"{n}:<{self.sub}>" if n in self._families else n for n in self._entries]
        return [*(shown if self.ordered else sorted(shown)), *self._presets]

    def presets(self) -> dict[str, str]:
        """``{preset name: the spec it stands for}``."""
        return dict(self._presets)

    def get(self, name: str) -> F:
        """The entry registered as ``name`` (not a family); a clear error listing the names."""
        if isinstance(name, str) and name in self._entries and name not in self._families:
            return self._entries[name]
        raise SamkitError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")

    def resolve(self, name: str) -> tuple[F, dict[str, Any]]:
        """The entry for ``name`` and the keyword a family receives (``{sub: "..."}``)."""
        family, rest = specs.split_name(name)
        if family in self._families and rest:
            assert self.sub is not None
            return self._entries[family], {self.sub: rest}
        return self.get(name), {}

    def target(self, name: str) -> Callable[..., Any] | None:
        """The callable a registered name builds with (whose signature lists its options)."""
        entry = self.get(name)
        return self._target(entry) if self._target is not None else entry  # type: ignore[return-value]

    def options(self, name: str) -> dict[str, Any]:
        """``{option: default}`` of a registered name (its target's keyword parameters; an option
        without default has :data:`REQUIRED`; a preset has none of its own)."""
        if name in self._presets:
            return {}
        fn = self.target(name)
        if fn is None or not callable(fn):
            return {}
        params = inspect.signature(fn).parameters.values()
        return {p.name: p.default for p in params
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}  # fmt: skip

    def summary(self, name: str) -> str:
        """One line on what ``name`` is: its registered summary or its docstring's first paragraph."""
        if name in self._summaries:
            return self._summaries[name]
        doc = inspect.getdoc(self.target(name)) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())

    def usage(self, name: str) -> str:
        """How to write ``name`` in a spec: ``every:k=...,reuse=None,alpha=0.7`` (presets: the name)."""
        if name in self._presets:
            return name
        shown = [k if v is REQUIRED else f"{k}={v}" for k, v in self.options(name).items()]
        return f"{name}:{','.join(shown)}" if shown else name

    def parse(self, text: str) -> tuple[str, dict[str, Any]]:
        """A spec ``name:key=value,...`` of this registry -> ``(name, options)``: a preset replaced
        by its spec, the name checked, each option checked against the target's signature and type
        hints and read as a YAML scalar (``5`` an int, ``none`` None); a missing required option is
        an error that shows how to give it."""
        spec = specs.parse(text, self.kind)
        if spec.name in self._presets:
            preset = specs.parse(self._presets[spec.name], self.kind)
            spec = specs.Spec(preset.name, {**preset.options, **spec.options}, spec.text)
        self.get(spec.name)
        accepted = self.options(spec.name)
        options: dict[str, Any] = {}
        for key, value in spec.options.items():
            if key not in accepted:
                raise SamkitError(
                    f"{self.kind} {spec.text!r}: {key + '=' + value!r} is not one of its options "
                    f"key=value ({', '.join(accepted) or 'it takes none'})"
                )
            options[key] = specs.scalar(value)
        missing = [k for k, v in accepted.items() if v is REQUIRED and k not in options]
        if missing:
            raise SamkitError(
                f"{self.kind} {spec.text!r} needs {', '.join(missing)} (e.g. {spec.name}:{missing[0]}=...; "
                f"its options: {', '.join(accepted)})"
            )
        fn = self.target(spec.name)
        if fn is not None:
            self.check_options(spec.text, fn, options, ())
        return spec.name, options

    def build(self, text: str) -> Any:
        """The object a spec stands for: ``NAMES.build("every:k=5")`` -> ``Every(k=5)``."""
        name, options = self.parse(text)
        fn = self.target(name)
        if fn is None:
            raise SamkitError(f"{self.kind} {name!r} is a name, not something to build")
        try:
            return fn(**options)
        except (TypeError, SamkitError) as err:  # say which spec (the CLI's flag, a study method's)
            raise SamkitError(f"{self.kind} {str(text).strip()!r}: {err}") from err

    def check_options(
        self, name: str, fn: Callable[..., Any], options: dict[str, Any], reserved: Iterable[str]
    ) -> None:
        """Check option names and types against ``fn``'s signature and type hints.

        A typo fails loudly with the accepted names, a value of the wrong type (``width="abc"``,
        ``input_shape="(3,32,32)"``) with the option's type and default, instead of a
        ``TypeError`` deep inside the constructor. A number written as text (YAML reads ``1e-3``
        as a string) is replaced in ``options`` by the float it spells where the hint is
        ``float``.
        """
        params = inspect.signature(fn).parameters
        reserved = set(reserved)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            # (open-ended entries check the names they take through **kwargs themselves)
            unknown = sorted(set(options) - set(params) - reserved)
            if unknown:
                accepted = sorted(set(params) - reserved)
                raise SamkitError(
                    f"{self.kind} {name!r} does not take option(s) {', '.join(unknown)}; "
                    f"it accepts: {', '.join(accepted) or '(none)'}"
                )
        hints = _type_hints(fn)
        for key, value in options.items():
            if key in hints and key in params:
                default = params[key].default
                example = None if default is inspect.Parameter.empty else default
                options[key] = check_option(f"{self.kind} {name!r}", key, value, hints[key], example)


def check_option(owner: str, key: str, value: Any, hint: Any, example: Any = None) -> Any:
    """``value`` if it fits the type ``hint`` (a float hint also takes a number written as text,
    returned as a float); else a :class:`SamkitError` such as ``dataset 'synthetic' option n
    expects an integer, got 'abc' (e.g. n=1024, its default)``."""
    if _fits(value, hint):
        return value
    if isinstance(value, str) and _fits(1.0, hint):
        try:
            return float(value)
        except ValueError:
            pass
    got = f"{value!r}" + (" (text)" if isinstance(value, str) else "")
    hint_text = f"; e.g. {key}={_literal(example)}, its default" if example is not None else ""
    raise SamkitError(f"{owner} option {key} expects {_describe(hint)}, got {got}{hint_text}.")


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    # functools.partial (one loader registered twice) keeps the hints on the wrapped function.
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isclass(fn):  # a class's options are its __init__'s
        fn = fn.__init__
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a hint that does not evaluate (e.g. a name under TYPE_CHECKING): no check
        return {}


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        return typing.get_args(hint)
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML or Python gives it) is acceptable for the type ``hint``."""
    if hint is Any:
        return True
    alternatives = _union_args(hint)
    if alternatives is not None:
        return any(_fits(value, h) for h in alternatives)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        # YAML has no tuples: a list (or a tuple from Python) stands for any sequence hint
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, Mapping) or hint in (dict,):
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint we do not model (a Protocol, a TypeVar): the entry checks it itself


def _describe(hint: Any) -> str:
    alternatives = _union_args(hint)
    if alternatives is not None:
        described = []
        for h in alternatives:
            text = _describe(h)
            if text not in described:  # tuple[int, ...] | list[int]: "a list of integers" once
                described.append(text)
        return " or ".join(described)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None) or hint is None:
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values"
        inner = {int: "integers", float: "numbers", str: "strings"}.get(args[0]) if args else None
        return f"a list of {inner}" if inner else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping of key: value"
    return getattr(hint, "__name__", str(hint))


def _literal(value: Any) -> str:
    # How to write the value on the command line / in YAML (flow style, as JSON spells it).
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)
