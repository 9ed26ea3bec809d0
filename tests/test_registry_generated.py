"""What is written from the registry (samkit.optim.registry.KINDS) names every registered name: the
command line's choices and help, ``samkit optimizers``, the run config's choices and keys, the API
index and the public namespaces. Registering a name and forgetting one of them fails here."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import samkit
from samkit.cli.app import build_parser
from samkit.cli.optimizers import optimizer_table
from samkit.optim import registry
from samkit.registry import REQUIRED
from samkit.train import TrainConfig, config

ROOT = Path(__file__).resolve().parents[1]
NAMES = [(kind, name) for kind, names in registry.KINDS.items() for name in names.names()]


def _train_flags() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions}


def test_every_kind_is_registered_with_names():
    assert set(registry.KINDS) == {"optimizer", "base", "cadence", "scope", "execution"}
    assert {"sampa", "rwp"} <= set(registry.names()) and "drift" in registry.kind("cadence").names()
    assert registry.kind("cadence").presets() == {"cheap": samkit.cadence.CHEAP}


@pytest.mark.parametrize(("kind", "name"), NAMES)
def test_the_command_line_offers_every_name(kind, name):
    action = _train_flags()[kind.split()[0]]
    if action.choices is not None:
        assert name in action.choices, f"--{kind} choices miss {name!r}"
    if kind != "optimizer":  # the help names each (the optimizers' summaries: `samkit optimizers`)
        assert re.search(rf"\b{name}\b", action.help), f"--{kind} help misses {name!r}"
    assert registry.kind(kind).summary(name), f"{kind} {name!r} has no summary"


def test_the_command_line_choices_are_exactly_the_registered_names():
    flags = _train_flags()
    for kind, names in registry.KINDS.items():
        choices = flags[kind].choices
        assert choices is None or list(choices) == names.names(), kind


def test_samkit_optimizers_lists_every_name_with_its_summary(capsys):
    text = optimizer_table(registry)
    for kind, name in NAMES:
        summary = registry.kind(kind).summary(name).replace("``", "")
        assert any(line.split()[:1] == [name] and summary in line for line in text.splitlines()), (kind, name)


def test_the_run_config_takes_the_registered_names_and_rule_options():
    assert config.OPTIMIZERS == tuple(registry.names())
    for key, names in (("base", config.BASES), ("scope", config.SCOPES), ("execution", config.EXECUTIONS)):
        assert names == tuple(registry.kind(key).names())
    keys = {f.name for f in fields(TrainConfig)}
    assert set(registry.KINDS) <= keys
    # the rule options held as run settings are config keys with their rule's defaults; every other
    # option of every rule is accepted in optimizer_options
    for option, (owner, _) in registry.RUN_SETTING_OPTIONS.items():
        assert option in keys and getattr(TrainConfig(), option) == registry.entry(owner).options[option]
    for name in registry.names():
        cfg = TrainConfig(optimizer=name).validated()
        for option in set(registry.entry(name).options) - set(registry.RUN_SETTING_OPTIONS):
            default = registry.entry(name).options[option]
            if default is not REQUIRED and default is not None:
                cfg.replace(optimizer_options={option: default})
    for name in registry.kind("scope").names():
        TrainConfig(optimizer="sam", scope=name).validated()
    for name in registry.kind("execution").names():
        TrainConfig(optimizer="sam", execution=name).validated()
    for name in registry.kind("base").names():
        TrainConfig(optimizer="sam", base=name).validated()


def _hooks():
    tools = ROOT / "tools" / "docs"
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(tools))
    try:
        spec = importlib.util.spec_from_file_location("samkit_docs_hooks_names", tools / "hooks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(tools))
    return module


def test_the_api_index_lists_every_name():
    """The index page with its registry sections filled (as `make docs` fills them)."""
    page = _hooks().fill((ROOT / "docs" / "api" / "index.md").read_text(), "api/index.md")
    assert "<!-- registry" not in page
    missing = [f"{kind} {name}" for kind, name in NAMES if f"`{name}`" not in page]
    assert not missing, f"registered but not in the API index: {missing}"


def test_the_public_namespaces_hold_every_registered_class():
    rules = {registry.entry(n).rule for n in registry.names()} - {None}
    assert {r.__name__ for r in rules} <= set(samkit.rules.__all__)
    cadences = registry.kind("cadence")
    for name in cadences.names():
        if name not in cadences.presets():
            assert cadences.target(name).__name__ in samkit.cadence.__all__, name
    for name in registry.kind("scope").names():
        assert registry.kind("scope").get(name).__name__ in samkit.scope.__all__, name
    assert "create_optimizer" in samkit.__all__
    # where a docstring names the family, it names no list that can drift (the issue: SAMPa and RWP
    # were missing from samkit's own docstring)
    assert "SAMPa" not in (samkit.__doc__ or "") or "RWP" in (samkit.__doc__ or "")
    assert inspect.getdoc(TrainConfig).count("``gsam``") == 0
