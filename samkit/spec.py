r"""The one spec language for a name with options: ``name:key=value,...``.

Optimizers and study methods (``gsam:alpha=0.1``, ``sam:rho=0.1,label=big``), cadences
(``every:k=5,reuse=looksam``), dataset and model families (``glue:sst2``, ``timm:resnet18``),
``--optimizer-option KEY=VALUE`` and sweep grids (``rho=0.05,0.1``) are all read here; the
registries (:mod:`samkit.registry`) say which names and options exist. Grammar::

    spec   := name [":" option ("," option)*]
    option := key "=" value
    value  := "(" text ")" | text        -- text: no "," and no parentheses at its top level

A value with commas in it — a nested spec with several options — is written in parentheses:
``sam:cadence=(every:k=4,reuse=looksam),rho=0.2``. A nested spec with one option needs none:
``sam:cadence=always:ascent_fraction=0.25``. A value is text until whoever knows the option reads
it: a nested spec is parsed again, a number or flag with :func:`scalar` (YAML: ``5`` an int,
``0.3`` a float, ``true`` a bool, ``none`` None).

Specs written before parentheses existed separate a nested spec's options with ``;``
(``sam:cadence=every:k=4;reuse=looksam,rho=0.2``); committed study files and saved run configs
hold them, so they are read as before: in a value that is not itself a spec (no ``:`` before the
``;``), ``;`` ends the option as ``,`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from samkit.errors import SamkitError

__all__ = ["Spec", "format_spec", "key_value", "parse", "scalar", "split", "split_name", "unwrap"]


@dataclass(frozen=True)
class Spec:
    """A parsed ``name:key=value,...``: the name and each option's value as text (unwrapped)."""

    name: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def split_name(text: str) -> tuple[str, str]:
    """``"glue:sst2"`` -> ``("glue", "sst2")``; ``"sgd"`` -> ``("sgd", "")``."""
    name, _, rest = str(text).partition(":")
    return name.strip(), rest.strip()


def split(text: str, what: str = "spec") -> list[str]:
    """``text`` cut at its top-level commas (not those inside parentheses), each part stripped."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                break
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise SamkitError(
            f"{what} {text!r} has unbalanced parentheses: wrap a value with commas in one pair, "
            "e.g. sam:cadence=(every:k=4,reuse=looksam)"
        )
    parts.append(text[start:].strip())
    return parts


def unwrap(text: str) -> str:
    """``"(a,b)"`` -> ``"a,b"``: one pair of parentheses around the whole value removed."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(text) - 1:  # "(a),(b)": the first pair closes early
            return text
    return text[1:-1].strip()


def key_value(item: str, what: str = "option") -> tuple[str, str]:
    """``"alpha=0.1"`` -> ``("alpha", "0.1")``, the key with ``-`` read as ``_`` (one option, as
    ``--optimizer-option`` takes it: the value is all the rest, parentheses included)."""
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SamkitError(f"{what} expects KEY=VALUE, got {item!r}.")
    return key, value.strip()


def _legacy_items(item: str) -> list[str]:
    """An option written with the old ``;`` separator (``k=4;reuse=looksam``), cut into options;
    a value that is itself a spec (``every:k=4;reuse=looksam``) keeps its ``;``."""
    _, _, value = item.partition("=")
    if value.strip().startswith("(") or ";" not in value:
        return [item]
    if ":" in value.split(";", 1)[0]:
        return [item]
    return [part.strip() for part in item.split(";") if part.strip()]


def parse(text: str, what: str = "spec") -> Spec:
    """``"every:k=5,reuse=looksam"`` -> ``Spec("every", {"k": "5", "reuse": "looksam"})``.

    ``what`` names the spec in errors (``"cadence"``, ``"method"``). An option without ``=`` and
    unbalanced parentheses are errors that show the spelling to use; of a key given twice the last
    counts (as it did before: committed study files hold such specs).
    """
    text = str(text).strip()
    name, rest = split_name(text)
    if not name:
        raise SamkitError(f"{what} {text!r} has no name; write name or name:key=value,...")
    options: dict[str, str] = {}
    for item in split(rest, what) if rest else []:
        for part in _legacy_items(item):
            if not part:
                continue
            key, sep, _ = part.partition("=")
            if not sep or not key.strip():
                raise SamkitError(f"{what} {text!r}: {part!r} is not key=value (write {name}:key=value,...).")
            key, value = key_value(part, what)
            options[key] = unwrap(value)  # a key given twice: the last counts (committed specs do that)
    return Spec(name, options, text)


def scalar(text: str) -> Any:
    """An option's text read as YAML reads a scalar: ``"5"`` -> 5, ``"0.3"`` -> 0.3, ``"true"`` ->
    True, ``"none"`` (any case) or ``"null"`` -> None, anything else the text itself."""
    text = str(text).strip()
    if text.lower() == "none":
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value


def _text(value: Any) -> str:
    """How a value is written so that :func:`scalar` reads it back."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        mantissa, e, exponent = repr(value).partition("e")
        if e and "." not in mantissa:  # YAML reads 1e-09 as text, 1.0e-09 as a number
            return f"{mantissa}.0e{exponent}"
    return str(value)


def format_spec(name: str, options: dict[str, Any] | None = None) -> str:
    """The canonical spelling: ``format_spec("every", {"k": 5})`` -> ``"every:k=5"``; a value with a
    comma is wrapped in parentheses, so :func:`parse` reads back what was written."""
    items = []
    for key, value in (options or {}).items():
        text = _text(value)
        items.append(f"{key}=({text})" if "," in text else f"{key}={text}")
    return f"{name}:{','.join(items)}" if items else name
