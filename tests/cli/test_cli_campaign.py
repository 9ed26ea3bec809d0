"""The bad-input campaign (issue 30): every option of every command, and corrupt run folders.

The options are read from the ``samkit`` parser itself (a new option is covered without touching
this file); each gets values generated from its kind — wrong type, negative, zero, NaN, inf, huge,
empty, unknown names, paths that are a file, missing, or hold someone else's files — and every
command that reads a run folder gets copies of one with a file truncated, emptied or replaced by
garbage. Each input, on top of an otherwise valid command line, must end in an ``error:`` line
with exit status 2, no traceback, and leave every file as it was (hashes compared) and nothing
new. No input reaches training or measuring: the functions that would start it raise instead, so
an invalid value accepted by mistake fails here at once, and nothing slow ever runs.

The default suite tries a seeded sample of the inputs (``SAMPLE``); ``pytest -m slow`` tries all.
The counts of the last run are printed (``-s``) and stated in docs/reliability.md.
"""

from __future__ import annotations

import collections
import hashlib
import random
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli

from samkit import cli

SAMPLE = 400  # inputs of the default suite (a seeded sample of all); pytest -m slow: all
TINY = ["--dataset", "mnist1d", "--model", "mlp", "--train-subset", "64", "--test-subset", "32",
        "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--quiet"]  # fmt: skip
# A valid command line per command, {out} a fresh path and {run} / {study} folders of the world.
BASE = {
    "train": ["train", *TINY, "--out", "{out}"],
    "compare": ["compare", "--methods", "sgd", "--seeds", "0", *TINY, "--no-flatness", "--out",
                "{out}"],
    "sweep": ["sweep", "--grid", "rho=0.05", "--seeds", "0", *TINY, "--out", "{out}"],
    "reproduce": ["reproduce", "--quick", "--claims", "dln-1sam-sparser", "--quiet", "--out",
                  "{out}"],
    "report": ["report", "{study}"],
    "status": ["status", "{study}"],
    "optimizers": ["optimizers"],
    "dln": ["dln", "--n", "4", "--d", "5", "--k", "1", "--steps", "10", "--no-plots", "--quiet",
            "--out", "{out}"],
    "sharpness": ["sharpness", "--run", "{run}", "--num-examples", "16", "--steps", "1", "--quiet"],
    "landscape": ["landscape", "--run", "{run}", "--num-examples", "16", "--steps", "3", "--quiet"],
}  # fmt: skip

HUGE = "1" + "0" * 30
BAD_INT = {"abc": "abc", "fraction": "1.5", "empty": "", "nan": "nan", "negative": "-1",
           "zero": "0", "huge": HUGE}  # fmt: skip
BAD_FLOAT = {"abc": "abc", "empty": "", "nan": "nan", "inf": "inf", "-inf": "-inf",
             "negative": "-1", "overflow": "1e400"}  # fmt: skip
BAD_TEXT = {"empty": "", "unknown": "nosuch"}
BAD_PATH = ("a file", "missing", "someone's files", "empty")
BAD_KEY_VALUE = {"empty": "", "no value": "nosuch", "unknown key": "nosuch=1"}

# What a generated value means for an option where it is valid: never tried there. Each entry
# says why; an option missing here gets every value of its kind (and fails if one is accepted).
VALID = {
    "zero": {"--seed", "--seeds", "--label-noise", "--momentum", "--weight-decay",
             "--warmup-epochs", "--label-smoothing", "--head-penalty", "--feature-penalty",
             "--rho", "--eta", "--sigma", "--lmbda", "--log-every-steps", "--noise",
             "--span", "--slurm-gpus", "--slurm-max-requeues"},  # a value with a meaning
    "negative": {"--span"},  # a coefficient range: -1 1 is the default
    "huge": {"--epochs", "--train-subset", "--test-subset", "--max-steps-per-epoch",
             "--train-eval-examples", "--eval-batch-size", "--flatness-examples", "--jobs",
             "--num-examples", "--n-test", "--every", "--threads", "--slurm-cpus",
             "--slurm-gpus", "--slurm-array-parallelism", "--slurm-max-requeues",
             "--micro-batch-size", "--shard-size", "--log-every-steps", "--n", "--d",
             "--steps", "--num-samples", "--batch-size",
             "--memory-budget"},  # a large count: all, later, or slow; a budget: no limit
    "missing": {"--out"},  # a new folder
    "someone's files": {"--data-root"},  # data goes beside them (a folder of one's own data)
    "unknown": {"--label", "--slurm-partition", "--slurm-account", "--slurm-mem",
                "--slurm-setup", "--slurm-sbatch", "--slurm-time"},  # free text, or the cluster's
}  # fmt: skip
# Options whose text is not a name or a path: (option) -> the values that are not valid.
TEXT = {
    "--cadence": {"empty": "", "unknown": "nosuch", "bad option": "every:k=0"},
    "--methods": {"unknown": "nosuch", "bad option": "sam:rho=-1", "bad key": "sam:nosuch=1"},
    "--grid": {"empty": "", "unknown key": "nosuch=1", "no values": "rho=", "bad value": "rho=-1"},
    "--claims": {"unknown": "nosuch"},
    "--baseline": {"unknown": "nosuch"},
    "--reference": {"unknown": "nosuch"},
    "--device": {"empty": "", "unknown": "nosuch", "absent": "cuda:99"},
}
PATHS = {"--out", "--resume", "--config", "--data-root", "--init-from", "--run", "folder",
         "--slurm-config", "--slurm-folder"}  # fmt: skip
SKIP = {"--help", "--version", "--slurm-executor"}
OTHERS_FILES = {"thesis.tex": "x", "sub/notes.txt": "y"}


def options():
    """``(command, option, kind)`` of every option of every command, from the parser."""
    parser = cli.build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            flag = action.option_strings[0] if action.option_strings else action.dest
            if flag in SKIP or flag == "-h":
                continue
            yield name, flag, action


def inputs():
    """Every ``(command, option, what, value)`` the campaign tries."""
    parser = cli.build_parser()
    out = [(name, "--nosuch", "unknown option", "1")
           for name in parser._subparsers._group_actions[0].choices]  # fmt: skip
    for command, flag, action in options():
        if action.nargs == 0:  # a switch: given a value
            values = {"a value": f"{flag}=x"}
        elif action.choices is not None and flag not in PATHS:
            values = {"unknown": "nosuch", "empty": ""}
        elif flag in PATHS:
            values = {what: what for what in BAD_PATH}
        elif flag in TEXT:
            values = TEXT[flag]
        elif getattr(action.type, "__name__", "") in ("int", "positive_int"):
            values = BAD_INT
        elif getattr(action.type, "__name__", "") == "float":
            values = BAD_FLOAT
        elif action.metavar == "KEY=VALUE" or flag.endswith("-option"):
            values = BAD_KEY_VALUE
        else:
            values = BAD_TEXT
        for what, value in values.items():
            if flag not in VALID.get(what, ()):
                out.append((command, flag, what, value))
    return out


# ---- the world the commands see ----------------------------------------------------------------
class Started(Exception):
    """Raised where training or measuring would start: the input was accepted."""


def _start(*args, **kwargs):
    raise Started


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a finished run, an unfinished one, a study, someone's files, a file; and
    damaged copies of the runs (one file truncated, emptied or replaced by garbage)."""
    from harness_fixtures import tiny_config

    from samkit.study.compare import compare
    from samkit.train import RunInterrupted, train

    root = tmp_path_factory.mktemp("campaign")
    mp = pytest.MonkeyPatch()
    mp.setenv("SAMKIT_CACHE", str(root.parent / "samkit-cache"))
    cfg = tiny_config(epochs=1, max_steps_per_epoch=2, train_subset=64, test_subset=32,
                      batch_size=16, eval_batch_size=32)  # fmt: skip
    train(cfg, root / "run", quiet=True)
    with pytest.raises(RunInterrupted):
        train(cfg.replace(epochs=2), root / "unfinished", quiet=True, interrupt_after_steps=3)
    compare(cfg, methods=["sgd"], seeds=[0], out=root / "study", flatness=False, quiet=True)
    for rel, text in OTHERS_FILES.items():
        (root / "others" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "others" / rel).write_text(text)
    (root / "a-file.txt").write_text("not a folder\n")
    damaged = []
    for source, names in (("run", ("config.yaml", "summary.json", "checkpoint.pt")),
                          ("unfinished", ("config.yaml", "checkpoint.pt", "metrics.jsonl")),
                          ("study", ("study.json", "sgd-seed0/summary.json"))):  # fmt: skip
        for name in names:
            for how in ("truncated", "empty", "garbage"):
                copy = root / f"{source}-{name.replace('/', '-')}-{how}"
                shutil.copytree(root / source, copy)
                data = (copy / name).read_bytes()
                damage = {"truncated": data[: len(data) // 2], "empty": b"",
                          "garbage": b"\x80garbage\x00\xff\n"}[how]  # fmt: skip
                (copy / name).write_bytes(damage)
                damaged.append((source, name, how, copy))
    yield root, damaged
    mp.undo()


def _stat_hash(path: Path, cache: dict) -> str:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in cache:
        cache[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return cache[key]


def _files(root: Path, cache: dict) -> dict[str, str]:
    """Every file (SHA-256) and folder under ``root`` (hashes cached while a file's stat holds)."""
    return {
        str(p.relative_to(root)): "folder" if p.is_dir() else _stat_hash(p, cache)
        for p in sorted(root.rglob("*"))
    }


def _path_value(what: str, root: Path, case: int) -> str:
    return {
        "a file": str(root / "a-file.txt"),
        "missing": str(root / f"missing-{case}" / "x"),
        "someone's files": str(root / "others"),
        "empty": "",
    }[what]


def _argv(command: str, flag: str, value: str, root: Path, case: int) -> list[str]:
    fill = {"out": str(root / f"case-{case}"), "run": str(root / "run"), "study": str(root / "study")}
    argv = [part.format(**fill) for part in BASE[command]]
    if flag == "folder":  # the positional folder of report / status
        return [command, value]
    if flag == "--nosuch":
        return [*argv, flag, value]
    if flag in argv:  # replace the base's value (and drop its other values: --methods a b)
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        del argv[i:j]
    return [*argv, value] if value.startswith(f"{flag}=") else [*argv, flag, value]


def _outcome(argv, capsys):
    try:
        code, err = run_cli(argv, capsys)
    except Started:
        return "accepted", ""
    except Exception as exc:  # what the command would print as a traceback
        return "traceback", f"{type(exc).__name__}: {exc}"
    if code != 2 or "Traceback" in err:
        return f"exit {code}", err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if not (last.startswith("error: ") or ": error: " in last):
        return "no error line", err
    return ("refused while parsing" if ": error: " in last else "refused"), err


@pytest.fixture
def started(monkeypatch, world):
    """Training, the diagonal-network grid and the measurements raise :class:`Started`."""
    import importlib
    import sys

    from samkit.train import loop

    for name in ("samkit.measure.sharpness", "samkit.measure.landscape", "samkit.cli.dln",
                 "samkit.study.dln"):  # fmt: skip
        importlib.import_module(name)  # what the commands import when they run
    monkeypatch.setenv("SAMKIT_CACHE", str(world[0].parent / "samkit-cache"))
    monkeypatch.setattr(loop._Run, "fit", _start)
    for module in [m for n, m in sys.modules.items() if n.startswith("samkit") and m]:
        for name in ("run_grid", "sharpness", "landscape_1d", "landscape_2d"):
            if callable(getattr(module, name, None)):
                monkeypatch.setattr(module, name, _start)


def _try(cases, world, capsys):
    """Run every case; the counts by outcome, and what went wrong."""
    root, _ = world
    cache: dict = {}
    counts: collections.Counter = collections.Counter()
    wrong = []
    for i, (command, flag, what, argv) in enumerate(cases):
        before = _files(root, cache)
        outcome, err = _outcome(argv(i), capsys)
        after = _files(root, cache)
        counts[outcome] += 1
        if outcome not in ("refused", "refused while parsing"):
            wrong.append(f"{command} {flag} ({what}): {outcome}: {err.strip()[-300:]}")
        elif after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))[:4]
            wrong.append(f"{command} {flag} ({what}): refused but changed {changed}")
        for new in set(after) - set(before):  # leave the world as it was for the next case
            path = root / new
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return counts, wrong


def _option_cases(world, sample):
    root, _ = world
    cases = []
    for command, flag, what, value in inputs():
        def argv(i, command=command, flag=flag, what=what, value=value):
            if flag in PATHS:
                value = _path_value(what, root, i)
            return _argv(command, flag, value, root, i)

        cases.append((command, flag, what, argv))
    if sample is not None and sample < len(cases):
        cases = random.Random(30).sample(cases, sample)
    return cases


def _damaged_cases(world):
    """Each damaged copy given to every command that reads such a folder."""
    root, damaged = world
    readers = {
        "run": [("sharpness", "--run"), ("landscape", "--run"), ("train", "--init-from")],
        "unfinished": [("train", "--resume")],
        "study": [("report", "folder"), ("compare", "--out")],
    }
    # Damage that is not an error, by design: --init-from reads the weights and the config (the
    # summary only says the run is complete); a resume rewrites metrics.jsonl from the checkpoint.
    repaired = {("train", "--init-from", "summary.json"), ("train", "--resume", "metrics.jsonl")}
    cases = []
    for source, name, how, copy in damaged:
        for command, flag in readers[source]:
            if (command, flag, name) in repaired:
                continue
            def argv(i, command=command, flag=flag, copy=copy):
                if command == "train" and flag == "--resume":
                    return ["train", "--resume", str(copy), "--quiet"]
                if command == "compare":  # continue the study: the same command as made it
                    return [*_argv(command, "--out", str(copy), root, i)]
                return _argv(command, flag, str(copy), root, i)

            cases.append((command, flag, f"{name} {how}", argv))
    return cases


def _report(title, counts, cases):
    commands = len({c[0] for c in cases})
    print(f"\n{title}: {len(cases)} inputs, {commands} commands, outcomes {dict(counts)}")


def test_every_option_refuses_bad_values_and_changes_nothing(world, started, capsys):
    cases = _option_cases(world, SAMPLE)
    counts, wrong = _try(cases, world, capsys)
    with capsys.disabled():
        _report("options (sample)", counts, cases)
    assert not wrong, "\n".join(wrong)


def test_damaged_run_and_study_folders_are_refused_and_kept(world, started, capsys):
    cases = _damaged_cases(world)
    counts, wrong = _try(cases, world, capsys)
    with capsys.disabled():
        _report("damaged folders", counts, cases)
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_the_whole_campaign(world, started, capsys):
    cases = _option_cases(world, None)
    counts, wrong = _try(cases, world, capsys)
    with capsys.disabled():
        _report("options (all)", counts, cases)
    assert not wrong, "\n".join(wrong)
