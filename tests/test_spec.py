"""The one spec language (samkit/spec.py): ``name:key=value,...``, nested specs in parentheses, the
old ``;`` spelling still read, and every method spec that committed study files hold still giving
the runs they record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from samkit import spec
from samkit.errors import SamkitError
from samkit.optim.cadence import Every, parse_cadence
from samkit.study import parse_grid, parse_method

ROOT = Path(__file__).resolve().parents[1]


def test_a_spec_is_a_name_and_options_as_text():
    assert spec.parse("every:k=5,reuse=looksam") == spec.Spec("every", {"k": "5", "reuse": "looksam"},
                                                               "every:k=5,reuse=looksam")
    assert spec.parse(" sgd ").options == {}
    assert spec.parse("sam:label=sam.rho=0.2").options == {"label": "sam.rho=0.2"}  # "=" in a value
    assert spec.parse("sam:shard-size=2").options == {"shard_size": "2"}
    assert spec.parse("sam:label=a,rho=1,label=b").options == {"label": "b", "rho": "1"}  # the last


def test_a_nested_spec_with_several_options_goes_in_parentheses():
    parsed = spec.parse("sam:cadence=(every:k=4,reuse=looksam),rho=0.2,label=look")
    assert parsed.options == {"cadence": "every:k=4,reuse=looksam", "rho": "0.2", "label": "look"}
    assert spec.parse("sam:cadence=always:ascent_fraction=0.25,rho=0.2").options == {
        "cadence": "always:ascent_fraction=0.25", "rho": "0.2"}  # one option: no parentheses needed
    label, overrides = parse_method("sam:cadence=(every:k=5,reuse=looksam),label=look")
    assert label == "look" and overrides["cadence"] == "every:k=5,reuse=looksam"
    c = parse_cadence(overrides["cadence"])
    assert isinstance(c, Every) and (c.k, c.reuse_mode) == (5, "looksam")


def test_the_old_semicolon_spelling_reads_as_the_new_one():
    old = spec.parse("sam:cadence=every:k=4;reuse=looksam;alpha=0.2,rho=0.2")
    assert old.options == {"cadence": "every:k=4;reuse=looksam;alpha=0.2", "rho": "0.2"}
    new = spec.parse("every:k=4,reuse=looksam,alpha=0.2")
    assert spec.parse(old.options["cadence"]).options == new.options
    assert repr(parse_cadence("every:k=4;reuse=looksam;alpha=0.2")) == repr(
        parse_cadence("every:k=4,reuse=looksam,alpha=0.2"))


@pytest.mark.parametrize(("text", "message"), [
    ("sam:cadence=(every:k=4", "unbalanced parentheses"),
    ("sam:rho", r"'rho' is not key=value"),
    (":rho=1", "has no name"),
])
def test_malformed_specs_say_how_to_write_them(text, message):
    with pytest.raises(SamkitError, match=message):
        spec.parse(text)


@given(st.dictionaries(
    st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True),
    st.one_of(st.integers(-5, 5), st.floats(-10, 10, allow_nan=False), st.booleans(), st.none(),
              st.from_regex(r"[a-z][a-z0-9.]{0,5}", fullmatch=True).filter(
                  lambda s: s not in ("none", "null", "true", "false", "yes", "no", "on", "off", "y", "n")),
              st.just("every:k=4,reuse=looksam")),
    max_size=4))
def test_what_format_writes_parse_reads_back(options):
    text = spec.format_spec("name", options)
    parsed = spec.parse(text)
    assert parsed.name == "name" and set(parsed.options) == set(options)
    for key, value in options.items():
        read = spec.scalar(parsed.options[key])
        assert read == value or (isinstance(value, str) and parsed.options[key] == value), (text, key)


def test_a_grid_value_with_commas_goes_in_parentheses():
    assert parse_grid(["cadence=(every:k=2,reuse=looksam),always", "rho=0.05,0.1"]) == {
        "cadence": ["every:k=2,reuse=looksam", "always"], "rho": [0.05, 0.1]}


def _committed_studies() -> list[Path]:
    return sorted((ROOT / "docs" / "report").rglob("study.json"))


def test_every_committed_method_spec_still_gives_the_runs_it_recorded():
    """Saved studies must reproduce: each method spec a committed study.json holds parses to the
    very cell its runs record (so the same config, the same hash), and its cadence builds."""
    checked = 0
    for path in _committed_studies():
        record = json.loads(path.read_text())
        cells = {run["label"]: run["cell"] for run in record.get("runs", [])}
        for method in record.get("methods") or []:
            label, overrides = parse_method(method)
            assert overrides == cells[label], (path, method)
            if overrides.get("cadence"):
                parse_cadence(overrides["cadence"])
            checked += 1
    assert checked > 100  # (the suites hold hundreds: the test reads them, not an empty list)


def test_every_committed_run_config_still_loads_to_the_hash_its_study_recorded():
    """The run config's names and rule options now come from the registry; a saved config.yaml
    (old keys eta, sigma, lmbda and ';' cadences included) still loads to the same config hash."""
    from samkit.train import config_hash, load_config

    checked = 0
    for path in _committed_studies():
        for run in json.loads(path.read_text()).get("runs", []):
            saved = path.parent / run["dir"] / "config.yaml"
            if saved.is_file():
                assert config_hash(load_config(saved)) == run["config_hash"], saved
                checked += 1
    assert checked > 500
