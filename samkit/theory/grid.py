"""The one runner of diagonal-linear-network experiments, and its ``results.json``.

A grid is every method of :data:`samkit.theory.dln.METHODS` at every ``rho`` (all at once, as one
batch) for each data seed x ``alpha`` x ``lr``. ``samkit dln`` runs one seed over an
``alpha x lr`` grid with curves; the ``dln`` study of ``samkit reproduce`` runs many seeds of one
setting, final values only. Both write the same file:

``results.json``::

    {"settings": GridSettings as a dict (lists for alpha, lr, rho, methods),
     "seconds": wall time of all sessions that computed these runs,
     "runs": [{"seed": 0, "alpha": 0.1, "lr": 0.05,
               "methods": {"gd": {"rho": [0.0], "train_loss": [...], "test_loss": [...],
                                  "l1": [...], "alpha_eff_mean": [...], "diverged": [...],
                                  # with settings["every"] set, also:
                                  "trajectory": {"steps": [...], "train_loss": [[...]], ...},
                                  "predicted_l1": [...]},
                           "nsam": ..., "1sam": ...}}, ...]}

Per method, every list is over its ``rho`` values (GD: the single ``rho = 0``); the metrics are
those of the final iterate, ``null`` where a configuration diverged. ``trajectory`` is
:class:`samkit.theory.dln.Trajectory` (metrics every ``every`` steps, ``[records][rho]``, and
the final ``beta`` and effective initialisation), ``predicted_l1`` the ``l1`` norm of the
interpolator :func:`~samkit.theory.dln.predicted_interpolator` predicts from the final effective
initialisation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from samkit import _atomic
from samkit.errors import SamkitError
from samkit.theory import dln

RESULTS = "results.json"
FINAL = ("train_loss", "test_loss", "l1", "alpha_eff_mean")  # recorded at the last step of every run


def rho_grid(low: float = 1e-3, high: float = 1.0, count: int = 13) -> list[float]:
    """``count`` values of ``rho`` evenly spaced in log scale from ``low`` to ``high``."""
    return np.logspace(np.log10(low), np.log10(high), count).tolist()


def _floats(values: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=float)))


@dataclass(frozen=True)
class GridSettings:
    """The problem (:func:`samkit.theory.dln.make_problem`), the training and the grid.

    ``alpha``, ``lr`` and ``rho`` take one value or several; ``every``: record the metrics every
    this many steps (``trajectory`` in the results), or ``None`` for the final values only.
    """

    n: int = 20
    d: int = 30
    k: int = 3
    noise: float = 0.0
    n_test: int = 10_000
    alpha: tuple[float, ...] = (0.1,)
    lr: tuple[float, ...] = (0.05,)
    steps: int = 10_000
    rho: tuple[float, ...] = field(default_factory=lambda: tuple(rho_grid()))
    methods: tuple[str, ...] = dln.METHODS
    normalized: bool = False
    every: int | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "lr", "rho"):
            object.__setattr__(self, name, _floats(getattr(self, name)))
        object.__setattr__(self, "methods", tuple(self.methods))
        if self.every is not None and self.every < 1:
            raise SamkitError(f"every must be >= 1 (steps between records) or None; got {self.every}")
        unknown = [m for m in self.methods if m not in dln.METHODS]
        if unknown:
            raise SamkitError(f"unknown method(s) {', '.join(unknown)}: choose from {dln.METHODS}")

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``results.json`` (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}  # fmt: skip


def _listed(values: Any) -> Any:
    """An array as nested lists, ``None`` where it is not finite (JSON has no NaN)."""
    a = np.asarray(values, dtype=float)
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def run_cell(settings: GridSettings, seed: int, alpha: float, lr: float) -> dict[str, Any]:
    """Every method at every ``rho`` on the data of ``seed``, from ``alpha`` with step ``lr``."""
    s = settings
    problem = dln.make_problem(s.n, s.d, s.k, s.noise, s.n_test, seed)
    methods: dict[str, Any] = {}
    for method in s.methods:
        rho = np.zeros(1) if method == "gd" else np.asarray(s.rho, dtype=float)
        traj = dln.train(problem, method, rho=rho, lr=lr, alpha=alpha, steps=s.steps,
                         normalized=s.normalized, every=s.every or s.steps)  # fmt: skip
        res: dict[str, Any] = {"rho": rho.tolist()}
        res.update({key: _listed(getattr(traj, key)[-1]) for key in FINAL})
        res["diverged"] = traj.diverged.tolist()
        if s.every is not None:
            res["trajectory"] = {k: _listed(v) for k, v in asdict(traj).items() if k != "diverged"}
            res["predicted_l1"] = [
                None if div else float(np.abs(dln.predicted_interpolator(problem.X, problem.y, a)).sum())
                for a, div in zip(traj.alpha_eff, traj.diverged, strict=True)
            ]
        methods[method] = res
    return {"seed": seed, "alpha": alpha, "lr": lr, "methods": methods}


def read_grid(folder: str | Path) -> dict[str, Any]:
    """The ``results.json`` of ``folder`` (format in the module docstring)."""
    path = Path(folder) / RESULTS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SamkitError(f"{folder} holds no {RESULTS} of a diagonal-network grid.") from None
    if not isinstance(data, dict) or not {"settings", "runs"} <= set(data):
        raise SamkitError(f"{path} is not the results of a diagonal-network grid (samkit dln).")
    return data


def run_grid(
    folder: str | Path,
    settings: GridSettings,
    seeds: Sequence[int] = (0,),
    *,
    jobs: int = 1,
    reuse: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run every seed x alpha x lr of ``settings`` and write ``folder/results.json``; returns it.

    ``reuse``: keep the runs an earlier call wrote to ``folder`` with the same settings (a study
    that gains seeds computes only the new ones); otherwise the file is replaced. ``jobs > 1``
    runs the cells in that many processes. A progress bar counts the cells when there are several
    (``quiet`` hides it).

    Example:
        >>> run_grid("runs/dln", GridSettings(rho=[0.1], steps=1000), seeds=range(3))["runs"][0]["seed"]
        0
    """
    from tqdm import tqdm

    folder = Path(folder)
    payload = {"settings": settings.to_dict(), "seconds": 0.0, "runs": []}
    if reuse and (folder / RESULTS).is_file():
        old = read_grid(folder)
        if old["settings"] == payload["settings"]:
            payload.update(seconds=old["seconds"], runs=old["runs"])
    done = {(r["seed"], r["alpha"], r["lr"]) for r in payload["runs"]}
    cells = [(int(seed), a, lr) for seed in seeds for a, lr in product(settings.alpha, settings.lr)
             if (int(seed), a, lr) not in done]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    no_bar = quiet or len(cells) < 2  # (a single cell has nothing to count)
    if jobs > 1 and len(cells) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(run_cell, settings, *cell) for cell in cells]
            new = [f.result() for f in tqdm(futures, desc="dln", disable=no_bar)]
    else:
        new = [run_cell(settings, *cell) for cell in tqdm(cells, desc="dln", disable=no_bar)]
    payload["runs"] += new
    payload["seconds"] += time.perf_counter() - t0
    # final values only are small enough to stay readable; curves are kept compact
    _atomic.write_json(folder / RESULTS, payload, indent=2 if settings.every is None else None)
    return payload
