"""What a suite is made of, as data: studies, claims, and the picks some studies take methods from.

A :class:`StudySpec` is one study (a compare, a sweep or the diagonal-network study) with its
tuning phase; a :class:`Claim` is a statement one study's runs can support or not, judged by
:mod:`samkit.study.claims` (a paired gap, or "keeps a share of a reference's gain"); a
:class:`Pick` chooses a method per family on some studies for others to run. The suites
themselves are :mod:`samkit.study.papers` (the papers' claims) and :mod:`samkit.study.cheap`
(cheap SAM on held-out settings), named in :mod:`samkit.study.suites`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from samkit.errors import SamkitError

GAP, KEEPS = "gap", "keeps"  # the kinds of claim: a paired gap; keeps a share of a reference's gain


@dataclass(frozen=True)
class StudySpec:
    """A study of the suite: ``kind`` compare | sweep | dln, its setup, methods or grid, seeds.

    ``setup`` is a TrainConfig mapping (compare/sweep) or :func:`samkit.theory.dln` settings
    (dln). An ``init_from`` of ``{suite}/<study>/<run>-seed{seed}`` starts each seed from the run
    of the same seed in another study of the suite (which then runs first).

    ``tune`` — ``((label, rhos), ...)`` — chooses those methods' rho on ``tune_seeds`` (disjoint
    from ``seeds``) in a folder of its own before the verdict runs (:mod:`samkit.study.tuning`);
    ``tune_from`` names a study whose choice this one takes for the same labels; ``rho_from`` —
    ``((label, tuned label), ...)`` — runs a method at the rho chosen for another one (a cheap
    SAM at SAM's rho). ``pick`` names a :class:`Pick` of the suite: the methods it chooses join
    ``methods`` (the study then runs after the pick's studies). ``reference``: the method whose
    gain the others are measured against (compare's cost-and-benefit table). ``judged=False``:
    a study whose runs only choose (a pick's studies), so its seeds may be the tuning seeds.
    """

    id: str
    kind: str
    setup: dict[str, Any]
    why: str
    methods: tuple[str, ...] = ()
    grid: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    flatness: bool = False
    baseline: str | None = None
    tune: tuple[tuple[str, tuple[float, ...]], ...] = ()
    tune_seeds: tuple[int, ...] = ()
    tune_from: str | None = None
    reference: str | None = None
    rho_from: tuple[tuple[str, str], ...] = ()
    pick: str | None = None
    judged: bool = True

    def __post_init__(self) -> None:
        if self.tune and not self.tune_seeds:
            raise SamkitError(f"study {self.id}: a tuned study needs tune_seeds.")
        if self.judged and set(self.tune_seeds) & set(self.seeds):
            raise SamkitError(
                f"study {self.id}: tuning seeds {sorted(set(self.tune_seeds) & set(self.seeds))} "
                "are also verdict seeds; the seeds that choose rho must not judge the claim."
            )

    def needs(self) -> list[str]:
        """The studies whose runs (or chosen rho) this one starts from."""
        source = str(self.setup.get("init_from", ""))
        deps = [source.split("/")[1]] if source.startswith("{suite}/") else []
        if self.tune_from and self.tune_from not in deps:
            deps.append(self.tune_from)
        return deps


@dataclass(frozen=True)
class Pick:
    """One method per family, chosen on the ``studies`` (their seeds judge nothing).

    ``candidates`` — ``((family, label, method spec), ...)``. Per family, the candidate whose
    worst share of ``reference``'s test-accuracy gain over ``baseline`` across the studies is
    highest (shares equal to rounding: the earlier candidate); a study where the reference gains
    less than ``min_gain`` counts for nothing. Of the picks of the ``best_of`` families, the one
    with the highest worst share is named ``best_name`` in the report.
    """

    id: str
    studies: tuple[str, ...]
    candidates: tuple[tuple[str, str, str], ...]
    reference: str = "sam"
    baseline: str = "sgd"
    min_gain: float = 0.005
    best_of: tuple[str, ...] = ()
    best_name: str = ""


@dataclass(frozen=True)
class Suite:
    """What ``samkit reproduce --suite NAME`` runs and judges: claims, the studies they need (in
    an order where every source runs first) and the picks some studies take their methods from."""

    claims: tuple[Claim, ...]
    studies: tuple[StudySpec, ...]
    picks: tuple[Pick, ...] = ()
    title: str = "Verdicts"  # of its report; "{suite}" becomes the suite's name

    def __post_init__(self) -> None:
        studies = {s.id: s for s in self.studies}
        picks = {p.id for p in self.picks}
        for c in self.claims:
            if c.study not in studies:
                raise SamkitError(f"claim {c.id}: no study {c.study!r} in the suite.")
            if not studies[c.study].judged:
                raise SamkitError(f"claim {c.id}: study {c.study} only chooses (judged=False); "
                                  "its seeds must not judge a claim.")  # fmt: skip
        for s in self.studies:
            if s.pick is not None and s.pick not in picks:
                raise SamkitError(f"study {s.id}: no pick {s.pick!r} in the suite.")


@dataclass(frozen=True)
class Claim:
    """One claim, written as data.

    ``arm`` and ``baseline`` name one side each: ``{"label": "sam"}`` (a compare method),
    ``{"cell": {"shard_size": 8}, "best_of": "rho"}`` (a sweep cell; with ``best_of`` the cell of
    that group with the highest mean test accuracy), or ``{"method": "1sam", "rho": 0.1}`` (dln).
    The statistic is ``metric(arm) - metric(baseline)`` paired by seed; ``direction`` is the sign
    the claim predicts; ``margin`` the smallest gain in that direction that would count (an
    interval that rules out even that is "not reproduced").

    ``kind="keeps"``: the claim that ``arm`` keeps at least ``share`` of ``reference``'s gain over
    ``baseline`` (test accuracy, paired by seed); the statistic is ``gain(arm) - share *
    gain(reference)``, and ``margin`` is the smallest reference gain there is to keep (below it:
    "no reference gain"). Its ``arm`` may be ``{"pick": pick id, "family": family}``: the method
    a :class:`Pick` of the suite chose for that family.
    """

    id: str
    text: str
    source: str
    study: str
    metric: str
    arm: dict[str, Any]
    baseline: dict[str, Any]
    direction: int
    margin: float = 0.0
    tags: tuple[str, ...] = field(default=())
    family: str = ""  # the same claim tested on another dataset shares it (default: the id)
    kind: str = GAP
    reference: dict[str, Any] | None = None
    share: float = 0.9

    def __post_init__(self) -> None:
        if self.direction not in (-1, 1):
            raise SamkitError(f"claim {self.id}: direction must be +1 or -1.")
        if self.kind not in (GAP, KEEPS):
            raise SamkitError(f"claim {self.id}: kind must be {GAP} or {KEEPS}.")
        if (self.kind == KEEPS) != (self.reference is not None):
            raise SamkitError(f"claim {self.id}: a {KEEPS} claim, and only one, names a reference.")


def select_claims(ids: list[str] | None, claims: tuple[Claim, ...]) -> list[Claim]:
    """The claims named by id or tag (``demo``, ``noise``, ``dln``...); all when ``ids`` is empty."""
    if not ids:
        return list(claims)
    known = {c.id for c in claims} | {t for c in claims for t in c.tags}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SamkitError(
            f"unknown claim(s) {', '.join(unknown)}; choose claim ids or tags from: "
            f"{', '.join(sorted(known))} (samkit reproduce --list shows them)."
        )
    return [c for c in claims if c.id in ids or set(c.tags) & set(ids)]
