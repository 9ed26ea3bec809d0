"""``samkit reproduce``: run the studies the claims need, then write the verdicts.

A suite folder holds ``suite.json`` (the claims and studies as data, and each session's time and
command), one study folder per study (``compare``/``sweep`` folders as those commands write them;
``dln/results.json`` for the theory study), ``verdicts.md`` and ``verdicts.csv``. Everything in
the verdict table is computed from the files, so ``samkit report DIR`` remakes it (and every
study's report) exactly.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study import dln, tuning
from samkit.study.compare import compare
from samkit.study.folder import SUITE, close_session, open_record
from samkit.study.launch import waiting
from samkit.study.runs import Launcher
from samkit.study.suite import Claim, StudySpec, select_claims, studies
from samkit.study.sweep import sweep
from samkit.study.verdicts import write_verdicts
from samkit.train import RunInterrupted, TrainConfig


def plan(suite: str, claim_ids: list[str] | None) -> tuple[list[Claim], list[StudySpec]]:
    """The selected claims and the studies they need (sources first), in the suite's order."""
    claims = select_claims(claim_ids)
    specs = {s.id: s for s in studies(suite)}
    needed: set[str] = set()

    def need(sid: str) -> None:
        if sid not in needed:
            needed.add(sid)
            for dep in specs[sid].needs():
                need(dep)

    for claim in claims:
        need(claim.study)
    return claims, [s for s in specs.values() if s.id in needed]


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
    claims, specs = plan(suite, claim_ids)
    record = _open_suite(out, suite, claims, specs)
    started = time.time()
    try:
        for spec in specs:
            if not quiet:
                print(f"== study {spec.id}: {spec.why}", flush=True)
            try:
                _run_study(out, spec, specs, launcher=launcher_, threads=threads, quiet=quiet)
            except RunInterrupted:
                raise RunInterrupted(
                    f"interrupted in study {spec.id}; finished runs are kept. To finish the suite, "
                    f"run the same samkit reproduce command again with --out {out}"
                ) from None
    finally:
        close_session(out, record, started, jobs, SUITE, studies=[s.id for s in specs])
    return write_verdicts(out)  # each study wrote its own report


def _open_suite(
    out: Path, suite: str, claims: list[Claim], specs: list[StudySpec]
) -> dict[str, Any]:
    record = {
        "kind": "reproduce",
        "suite": suite,
        "claims": [asdict(c) for c in claims],
        "studies": [asdict(s) for s in specs],
    }

    def same_suite(old: dict[str, Any]) -> None:
        if old.get("suite") != suite:
            raise SamkitError(
                f"{out} holds the {old.get('suite')!r} suite, not {suite!r}; nothing was changed. "
                "Use another --out."
            )

    return open_record(out, SUITE, record, merge={"claims": "id", "studies": "id"},
                       check=same_suite, what="claims-suite")  # fmt: skip


def _run_study(
    out: Path,
    spec: StudySpec,
    specs: list[StudySpec],
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
    methods = list(spec.methods)
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
        methods = tuning.tuned_methods(spec.methods, chosen)
        if not quiet:
            print(f"== {spec.id}: rho chosen on the tuning seeds: {' '.join(methods)}", flush=True)
    compare(base, methods=methods, flatness=spec.flatness, seeds=list(spec.seeds), **common)

