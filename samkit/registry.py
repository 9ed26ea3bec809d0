"""Name -> constructor tables shared by datasets and models (timm-style registries).

A name registered with ``prefix=True`` is a family that takes a sub-name after a colon:
``"timm:resnet18"`` calls the ``timm`` entry with ``name="resnet18"``, ``"glue:sst2"`` the ``glue``
entry with ``task="sst2"``. Unknown names and unknown options fail with the accepted ones listed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from samkit.errors import SamkitError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Entries of one ``kind`` (``"model"``, ``"dataset"``); families pass their sub-name as ``sub``."""

    def __init__(self, kind: str, sub: str) -> None:
        self.kind, self.sub = kind, sub
        self._entries: dict[str, F] = {}
        self._families: set[str] = set()

    def register(self, name: str, *, prefix: bool = False) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            if prefix:
                self._families.add(name)
            return fn

        return decorate

    def names(self) -> list[str]:
        """Registered names, sorted; families shown as ``family:<sub>``."""
        return sorted(
            f"{n}:<{self.sub}>" if n in self._families else n for n in self._entries
        )

    def resolve(self, name: str) -> tuple[F, dict[str, Any]]:
        """The entry for ``name`` and the keyword a family receives (``{sub: "..."}``)."""
        family, sep, rest = name.partition(":")
        if sep and family in self._families and rest:
            return self._entries[family], {self.sub: rest}
        if not sep and name in self._entries and name not in self._families:
            return self._entries[name], {}
        raise SamkitError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")

    def check_options(self, name: str, fn: F, options: Iterable[str], reserved: Iterable[str]) -> None:
        """A typo in an option fails loudly with the accepted names, not as a ``TypeError``."""
        params = inspect.signature(fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return  # open-ended options: the entry checks them itself
        reserved = set(reserved)
        unknown = sorted(set(options) - set(params) - reserved)
        if unknown:
            accepted = sorted(set(params) - reserved)
            raise SamkitError(
                f"{self.kind} {name!r} does not take option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(accepted) or '(none)'}"
            )
