"""``samkit reproduce``: run the studies a suite's claims need, then write the verdicts.

A suite folder holds ``suite.json`` (the claims, studies and picks as data, and each session's
time and command), one study folder per study (``compare``/``sweep`` folders as those commands
write them, with a ``-tune`` folder beside a tuned one; ``dln/results.json`` for the theory
study), ``verdicts.md`` and ``verdicts.csv``. Everything in the verdict tables is computed from
the files, so ``samkit report DIR`` remakes them (and every study's report) exactly. The suites
themselves are data (:mod:`samkit.study.suites`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study import dln, tuning
from samkit.study.compare import compare
from samkit.study.launch import waiting
from samkit.study.records import SUITE, close_session, open_record
from samkit.study.suite_report import write_verdicts
from samkit.study.suite_spec import Claim, Pick, StudySpec
from samkit.study.suites import plan, record_of
from samkit.study.sweep import sweep
from samkit.study.train_runs import Launcher
from samkit.train import RunInterrupted, TrainConfig


def reproduce(
    out: str | Path,
    *,
    suite: str = "quick",
    claim_ids: list[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    quiet: bool = False,
    launcher: str | Launcher = "local",
) -> str:
    """Run the studies of the selected claims into ``out`` and write the verdicts; returns the
    verdict table. A folder from an earlier call is continued (finished runs are reused).
    ``launcher`` runs each study's runs (:func:`samkit.study.compare`); the diagonal-network
    study runs here. A later study starts from an earlier one's results, so the launcher waits."""
    out = Path(out)
    launcher_ = waiting(launcher, jobs)
    claims, specs, picks = plan(suite, claim_ids)
    record = _open_suite(out, suite, claims, specs, picks)
    started = time.time()
    try:
        for spec in specs:
            if not quiet:
                print(f"== study {spec.id}: {spec.why}", flush=True)
            try:
                _run_study(out, spec, specs, picks, launcher=launcher_, threads=threads,
                           quiet=quiet)  # fmt: skip
            except RunInterrupted:
                raise RunInterrupted(
                    f"interrupted in study {spec.id}; finished runs are kept. To finish the suite, "
                    f"run the same samkit reproduce command again with --out {out}"
                ) from None
    finally:
        close_session(out, record, started, jobs, SUITE, studies=[s.id for s in specs])
    return write_verdicts(out)  # each study wrote its own report


def _open_suite(
    out: Path, suite: str, claims: list[Claim], specs: list[StudySpec], picks: list[Pick]
) -> dict[str, Any]:
    record = record_of(suite, claims, specs, picks)

    def same_suite(old: dict[str, Any]) -> None:
        if old.get("suite") != suite:
            raise SamkitError(
                f"{out} holds the {old.get('suite')!r} suite, not {suite!r}; nothing was changed. "
                "Use another --out."
            )

    return open_record(out, SUITE, record, merge={"claims": "id", "studies": "id", "picks": "id"},
                       check=same_suite, what="claims-suite")  # fmt: skip


def _run_study(
    out: Path,
    spec: StudySpec,
    specs: list[StudySpec],
    picks: list[Pick],
    *,
    launcher: Launcher,
    threads: int | None,
    quiet: bool,
) -> None:
    folder = out / spec.id
    if spec.kind == "dln":
        dln.run(folder, spec.setup, list(spec.seeds), quiet=quiet)
        dln.write_report(folder)
        return
    setup = dict(spec.setup)
    if "init_from" in setup:  # "{suite}/noise-40/sgd-seed{seed}" -> this suite's folder
        setup["init_from"] = setup["init_from"].replace("{suite}", str(out))
    if threads is not None:
        setup["threads"] = threads
    base = TrainConfig.from_dict(setup).validated()
    common = dict(out=folder, launcher=launcher, baseline=spec.baseline, quiet=quiet)
    if spec.kind == "sweep":
        sweep(base, grid=list(spec.grid), flatness=spec.flatness, seeds=list(spec.seeds), **common)
        return
    methods = list(spec.methods) + _picked_methods(out, spec, picks, quiet)
    tune = dict(spec.tune)
    if tune:  # rho chosen on the tuning seeds, in a folder of its own, before the verdict runs
        if not quiet:
            print(f"== tuning {', '.join(tune)} of {spec.id} on seeds "
                  f"{', '.join(map(str, spec.tune_seeds))}", flush=True)  # fmt: skip
        compare(base, methods=tuning.candidates(spec.methods, tune), seeds=list(spec.tune_seeds),
                out=out / f"{spec.id}{tuning.SUFFIX}", launcher=launcher, flatness=False,
                quiet=quiet)  # fmt: skip
    if spec.tune_from is not None or tune:
        source = spec.tune_from or spec.id
        source_tune = dict(next(s for s in specs if s.id == source).tune)
        chosen = tuning.choose(out / f"{source}{tuning.SUFFIX}", source_tune)
        methods = tuning.tuned_methods(methods, chosen, dict(spec.rho_from))
        if not quiet:
            print(f"== {spec.id}: rho chosen on the tuning seeds: {' '.join(methods)}", flush=True)
    compare(base, methods=methods, flatness=spec.flatness, seeds=list(spec.seeds),
            reference=spec.reference, **common)  # fmt: skip


def _picked_methods(out: Path, spec: StudySpec, picks: list[Pick], quiet: bool) -> list[str]:
    """The method specs a study takes from its pick (chosen now, from the pick's studies)."""
    if spec.pick is None:
        return []
    pick = next(p for p in picks if p.id == spec.pick)
    chosen = tuning.choose_picks(asdict(pick), tuning.pick_shares(out, asdict(pick)))
    if not quiet:
        print(f"== {spec.id}: picked on {', '.join(pick.studies)}: {', '.join(chosen.values())}",
              flush=True)  # fmt: skip
    return [f"{spec_},label={label}" for _, label, spec_ in pick.candidates
            if label in chosen.values()]  # fmt: skip
