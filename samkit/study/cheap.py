"""Cheap SAM beyond its own preset, as a suite: which SAM at <= 1.25x SGD's passes keeps SAM's
gain on settings and seeds its knobs were not chosen on.

The protocol is ordinary suite data (:mod:`samkit.study.suite_spec`), run by ``samkit reproduce`` and
reported by ``samkit report`` like the papers' claims:

1. **Settings** (:data:`SETTINGS`): noisy-label MNIST-1D at 0 / 20 / 40 / 60% flipped labels on
   two models (the preset's 32-channel CNN on 2000 examples; a 64-channel one on 1000), and digits
   at 40% — nine in all, split into a **tuning half** and a **held-out half**. Each is a study.
2. **SAM's rho** is tuned per setting on SAM itself, on the tuning seeds (each study's tuning
   phase, :mod:`samkit.study.tuning`); every cheap method of a setting runs at that rho.
3. **The methods' own knobs** (LookSAM's alpha: :data:`CANDIDATES`) are a :class:`Pick` on the
   tuning half's studies (every candidate, on the tuning seeds): per family, the candidate whose
   worst share of SAM's gain over those settings is highest.
4. **Judged** on the held-out studies with fresh seeds (>= 5, paired by seed): per picked method
   and setting, a claim of kind ``keeps`` (:func:`samkit.study.claims.keeps_verdict`): the 95%
   interval of ``gain - 0.9 * SAM's gain``.

The cadence preset ``cheap`` (:data:`samkit.optim.cadence.CHEAP`) is the best of the cadence families'
picks (the pick's ``best_name``); the committed report (``docs/report/cheap/``) says how it
fared on step 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from samkit.errors import SamkitError
from samkit.study.presets import DIGITS_JOB, NOISY_JOB
from samkit.study.suite_spec import KEEPS, Claim, Pick, StudySpec, Suite

TUNE_SEEDS = (100, 101)
VERDICT_SEEDS = (0, 1, 2, 3, 4)
RHOS_MNIST1D = (0.05, 0.1, 0.2)
RHOS_DIGITS = (0.2, 0.4, 0.8)
PICK = "family-picks"  # the Pick's id
SHARE = 0.9  # what a cheap method must keep of SAM's gain (at <= 1.25x SGD's passes)
MIN_GAIN = 0.005  # a setting where SAM gains less than this has no gain to keep
SOURCE = "samkit's cheap-SAM protocol (docs/report/cheap/)"


@dataclass(frozen=True)
class Setting:
    """One setting of the protocol: a run setup, SAM's rho grid, and which half it is in."""

    id: str
    setup: dict[str, Any]
    why: str
    rhos: tuple[float, ...]
    held_out: bool


def _mnist1d(noise: float, wide: bool) -> dict[str, Any]:
    setup = {**NOISY_JOB, "label_noise": noise}
    if wide:  # a wider model on fewer examples: memorising is easier, SAM's radius differs
        setup.update(model_options={"width": 64}, train_subset=1000)
    return setup


SETTINGS: tuple[Setting, ...] = (
    Setting("n20-w32", _mnist1d(0.2, False), "MNIST-1D, 20% noise, width 32, 2000 examples",
            RHOS_MNIST1D, held_out=False),
    Setting("n60-w32", _mnist1d(0.6, False), "MNIST-1D, 60% noise, width 32, 2000 examples",
            RHOS_MNIST1D, held_out=False),
    Setting("n0-w64", _mnist1d(0.0, True), "MNIST-1D, clean, width 64, 1000 examples",
            RHOS_MNIST1D, held_out=False),
    Setting("n40-w64", _mnist1d(0.4, True), "MNIST-1D, 40% noise, width 64, 1000 examples",
            RHOS_MNIST1D, held_out=False),
    Setting("n0-w32", _mnist1d(0.0, False), "MNIST-1D, clean, width 32, 2000 examples",
            RHOS_MNIST1D, held_out=True),
    Setting("n40-w32", _mnist1d(0.4, False), "MNIST-1D, 40% noise, width 32, 2000 examples "
            "(the preset the earlier cheap-SAM study tuned on)", RHOS_MNIST1D, held_out=True),
    Setting("n20-w64", _mnist1d(0.2, True), "MNIST-1D, 20% noise, width 64, 1000 examples",
            RHOS_MNIST1D, held_out=True),
    Setting("n60-w64", _mnist1d(0.6, True), "MNIST-1D, 60% noise, width 64, 1000 examples",
            RHOS_MNIST1D, held_out=True),
    Setting("digits-n40", {**DIGITS_JOB, "label_noise": 0.4}, "digits, 40% noise, 2-D CNN",
            RHOS_DIGITS, held_out=True),
)  # fmt: skip

# (family, label, method spec): every cheap method costs at most 1.25x SGD's passes. Left out after
# the earlier single-preset study (docs/report/cheap-sam/): plain every-k and reusing the last
# perturbation (52-62% of SAM's gain there at 1.25x). The cadence families can become
# the cheap cadence preset; rwp (one pass, random perturbation: Li et al., TMLR 2024)
# and the penalty (SGD with L2 penalties on the head and its input features: the 1x control of
# Baek, Kolter & Raghunathan, ICLR 2024) are controls: does the gain need SAM's ascent at all?
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("looksam", "looksam-a0.2", "sam:cadence=every:k=4;reuse=looksam;alpha=0.2"),
    ("looksam", "looksam-a0.5", "sam:cadence=every:k=4;reuse=looksam;alpha=0.5"),
    ("drift", "drift-4", "sam:cadence=drift:k=4"),
    ("fraction", "fraction-0.25", "sam:cadence=always:ascent_fraction=0.25"),
    ("rwp", "rwp", "rwp:noise=0.01"),
    ("penalty", "penalty-1e-2", "sgd:head_penalty=0.01,feature_penalty=0.01"),
)
CADENCE_FAMILIES = ("looksam", "drift", "fraction")  # the picks that can become a cadence preset


def suite(
    settings: tuple[Setting, ...] = SETTINGS,
    candidates: tuple[tuple[str, str, str], ...] = CANDIDATES,
    tune_seeds: tuple[int, ...] = TUNE_SEEDS,
    verdict_seeds: tuple[int, ...] = VERDICT_SEEDS,
) -> Suite:
    """The protocol as studies, a pick and ``keeps`` claims (the module doc's steps 1-4)."""
    if set(tune_seeds) & set(verdict_seeds):
        raise SamkitError("the tuning seeds and the verdict seeds must be disjoint.")
    tuning = [s for s in settings if not s.held_out]
    held = [s for s in settings if s.held_out]
    at_sams_rho = tuple((label, "sam") for _, label, spec in candidates if spec.startswith("sam:"))
    pick = Pick(PICK, tuple(s.id for s in tuning), tuple(candidates), min_gain=MIN_GAIN,
                best_of=CADENCE_FAMILIES, best_name="cadence=cheap")  # fmt: skip

    def study(s: Setting, methods: tuple[str, ...], seeds: tuple[int, ...], **kw: Any) -> StudySpec:
        return StudySpec(s.id, "compare", dict(s.setup), s.why, methods=("sgd", "sam", *methods),
                         seeds=seeds, tune=(("sam", tuple(s.rhos)),), tune_seeds=tune_seeds,
                         reference="sam", rho_from=at_sams_rho, **kw)  # fmt: skip

    every = tuple(f"{spec},label={label}" for _, label, spec in candidates)
    studies = [study(s, every, tune_seeds, judged=False) for s in tuning]
    studies += [study(s, (), verdict_seeds, pick=PICK) for s in held]
    families = dict.fromkeys(family for family, _, _ in candidates)
    claims = tuple(
        Claim(f"{s.id}-{family}", f"The {family} pick keeps at least {SHARE:.0%} of SAM's "
              f"test-accuracy gain over SGD ({s.why}).", SOURCE, s.id, "test_acc",
              {"pick": PICK, "family": family}, {"label": "sgd"}, +1, MIN_GAIN,
              (family, "held-out"), kind=KEEPS, reference={"label": "sam"}, share=SHARE)
        for s in held for family in families
    )  # fmt: skip
    return Suite(claims, tuple(studies), (pick,), title="Cheap SAM beyond its preset: verdicts")


def from_record(record: dict[str, Any]) -> Suite:
    """The suite of a ``suite.json`` written before the protocol was ordinary suite data (it held
    ``settings``, ``candidates``, ``tune_seeds`` and ``verdict_seeds`` and no studies)."""
    settings = tuple(Setting(s["id"], s["setup"], s["why"], tuple(s["rhos"]), s["held_out"])
                     for s in record["settings"])  # fmt: skip
    candidates = tuple((family, label, spec) for family, label, spec in record["candidates"])
    return suite(settings, candidates, tuple(record["tune_seeds"]), tuple(record["verdict_seeds"]))
