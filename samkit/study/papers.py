"""The papers' claims as data, and the studies that test them (``samkit reproduce``).

A :class:`~samkit.study.suite_spec.Claim` is a sentence from a paper, its source, the study that
tests it, and the statistic: the paired gap (by seed) of one ``metric`` between an ``arm`` and a
``baseline`` of that study, with the direction the claim predicts.
:func:`samkit.study.claims.verdict` turns the 95% interval of that gap into reproduced / not
reproduced / inconclusive.

Two suites run the same claims: ``quick`` (3 seeds, a small m-sharpness grid; 8 minutes on a
2-core CPU with ``--jobs 2``) and ``full`` (5 seeds, a larger grid; 30 minutes on a loaded 2-core
CPU, about 20 on an idle one). Every setting is a named preset here, so a
claim's numbers can be traced to the exact runs (docs/report/README.md).
"""

from __future__ import annotations

from typing import Any

from samkit.study.presets import DIGITS_JOB, MAIN_JOB, NOISY_JOB
from samkit.study.suite_spec import Claim, StudySpec, Suite

FINE_TUNE = {"epochs": 10, "lr": 0.05}  # a short second run from the source's weights
# m-sharpness needs a model whose normalisation is per example (BatchNorm over a shard of 8 is
# not BatchNorm over a batch); shards run vectorized: 2.6x (m=8) to 4x (m=4) faster than the loop
# on the 2-core CPU for this small model (measured), and the same computation.
MSHARP_JOB = {
    **NOISY_JOB,
    "model_options": {"width": 32, "norm": "group"},
    "optimizer": "sam",
    "execution": "vectorized",
}
DLN_RHOS = (0.03, 0.1, 0.178, 0.316, 0.562, 1.0)  # samkit's rho (1-SAM: 2x the notebook's)


FORET = "Foret et al., Sharpness-Aware Minimization for Efficiently Improving Generalization (ICLR 2021)"
AF22 = "Andriushchenko & Flammarion, Towards Understanding Sharpness-Aware Minimization (ICML 2022)"
MSAM = "Behdin et al., mSAM: Micro-Batch-Averaged Sharpness-Aware Minimization (2023)"
FSAM = "Li et al., Friendly Sharpness-Aware Minimization (CVPR 2024)"
BAEK = "Baek, Kolter & Raghunathan, Why is SAM Robust to Label Noise? (ICLR 2024)"


def _tuned(*pairs: tuple[str, tuple[float, ...]]) -> tuple[tuple[str, tuple[float, ...]], ...]:
    return tuple(pairs)


# The rho grids each method is tuned over (per dataset: digits' best radii are larger).
RHOS_MNIST1D = (0.05, 0.1, 0.2)
RHOS_MNIST1D_SMALL = (0.025, 0.05, 0.1)  # the clean main job (SAM's preset rho 0.05) and mSAM
RHOS_DIGITS = (0.1, 0.2, 0.4)
RHOS_DIGITS_NOISY = (0.2, 0.4, 0.8)
RHOS_DIGITS_MSAM = (0.1, 0.2, 0.4)  # mSAM and m-sharpness (per-shard normalisation)


TITLE = "The papers' claims: verdicts ({suite} suite)"


def suite(*, quick: bool) -> Suite:
    """Every claim, and the studies of the quick or the full suite."""
    return Suite(CLAIMS, tuple(studies(quick=quick)), title=TITLE)


def studies(*, quick: bool) -> list[StudySpec]:
    """The studies of the quick or the full suite, in an order where every source runs first.

    Every SAM-family method's rho is tuned on its own grid on tuning seeds (100, 101; quick: 100)
    that the verdicts never use (:mod:`samkit.study.tuning`); fine-tuning takes the rho chosen for
    SAM on the study it starts from.
    """
    seeds = (0, 1, 2) if quick else (0, 1, 2, 3, 4)
    tune_seeds = (100,) if quick else (100, 101)
    noisy = {k: v for k, v in NOISY_JOB.items() if k != "label_noise"}
    digits = dict(DIGITS_JOB)
    common: dict[str, Any] = {"seeds": seeds, "tune_seeds": tune_seeds}
    sam_only = ("sgd", "sam")
    msharp_m = (8, 64) if quick else (8, 16, 64)
    digits_m = (4, 64) if quick else (4, 16, 64)
    return [
        StudySpec(
            "main", "compare", dict(MAIN_JOB),
            "the main job: clean MNIST-1D, 4000 examples, 30 epochs",
            methods=("sgd", "sam", "msam:shards=4", "fsam:lmbda=0.6"), flatness=True,
            tune=_tuned(("sam", RHOS_MNIST1D_SMALL), ("msam", RHOS_MNIST1D_SMALL),
                        ("fsam", RHOS_MNIST1D)), **common,
        ),
        StudySpec(
            "noise-20", "compare", {**noisy, "label_noise": 0.2},
            "the noisy-label preset at 20% flipped labels", methods=sam_only,
            tune=_tuned(("sam", RHOS_MNIST1D)), **common,
        ),
        StudySpec(
            "noise-40", "compare", {**noisy, "label_noise": 0.4},
            "the noisy-label preset (SGD memorises the flipped labels)", methods=sam_only,
            tune=_tuned(("sam", RHOS_MNIST1D)), **common,
        ),
        StudySpec(
            "finetune-noisy", "compare",
            {**noisy, "label_noise": 0.4, **FINE_TUNE,
             "init_from": "{suite}/noise-40/sgd-seed{seed}"},
            "10 more epochs from each seed's SGD run of noise-40 (same flipped labels)",
            methods=sam_only, seeds=seeds, tune_from="noise-40",
        ),
        StudySpec(
            "finetune-clean", "compare",
            {**MAIN_JOB, **FINE_TUNE, "init_from": "{suite}/main/sgd-seed{seed}"},
            "10 more epochs from each seed's SGD run of the main job",
            methods=sam_only, seeds=seeds, tune_from="main",
        ),
        StudySpec(
            "m-sharpness", "compare", dict(MSHARP_JOB),
            "SAM with m examples per shard on the noisy preset, rho tuned per m, GroupNorm "
            "(per-example normalisation, so small shards compute what they claim)",
            methods=tuple(f"sam:shard_size={m},label=m{m}" for m in msharp_m),
            baseline=f"m{msharp_m[-1]}",
            tune=_tuned(*((f"m{m}", RHOS_MNIST1D_SMALL) for m in msharp_m)), **common,
        ),
        StudySpec(
            "dln", "dln",
            {"n": 20, "d": 30, "k": 3, "alpha": 0.1, "lr": 0.05, "steps": 10_000,
             "rho": list(DLN_RHOS)},
            "diagonal linear network (A&F 2022's sparse regression), one data seed per seed",
            seeds=tuple(range(10 if quick else 20)),
        ),
        StudySpec(
            "digits-clean", "compare", dict(digits),
            "scikit-learn's digits, clean labels, a 2-D CNN, 40 epochs", methods=sam_only,
            tune=_tuned(("sam", RHOS_DIGITS)), **common,
        ),
        StudySpec(
            "digits-noise-20", "compare", {**digits, "label_noise": 0.2},
            "digits with 20% of the train labels flipped", methods=sam_only,
            tune=_tuned(("sam", RHOS_DIGITS_NOISY)), **common,
        ),
        StudySpec(
            "digits-noise-40", "compare", {**digits, "label_noise": 0.4},
            "digits with 40% flipped labels; mSAM (4 shards of 16: the smallest shards a BatchNorm "
            "model takes, samkit's SmallShardWarning) and Friendly-SAM beside SAM",
            methods=("sgd", "sam", "msam:shards=4", "fsam:lmbda=0.6"), flatness=True,
            tune=_tuned(("sam", RHOS_DIGITS_NOISY), ("msam", RHOS_DIGITS_MSAM),
                        ("fsam", RHOS_DIGITS_NOISY)), **common,
        ),
        StudySpec(
            "digits-noise-60", "compare", {**digits, "label_noise": 0.6},
            "digits with 60% flipped labels", methods=sam_only,
            tune=_tuned(("sam", RHOS_DIGITS_NOISY)), **common,
        ),
        StudySpec(
            "digits-finetune-noisy", "compare",
            {**digits, "label_noise": 0.4, **FINE_TUNE,
             "init_from": "{suite}/digits-noise-40/sgd-seed{seed}"},
            "10 more epochs from each seed's SGD run of digits-noise-40",
            methods=sam_only, seeds=seeds, tune_from="digits-noise-40",
        ),
        StudySpec(
            "digits-m-sharpness", "compare",
            {**digits, "label_noise": 0.4, "model_options": {"width": 32, "norm": "group"},
             "optimizer": "sam", "execution": "vectorized"},
            "SAM with m examples per shard on digits at 40% noise (m = 64: the whole batch), "
            "rho tuned per m, GroupNorm",
            methods=tuple(f"sam:shard_size={m},label=m{m}" for m in digits_m),
            baseline=f"m{digits_m[-1]}",
            tune=_tuned(*((f"m{m}", RHOS_DIGITS_MSAM) for m in digits_m)), **common,
        ),
    ]  # fmt: skip


def _on_digits(claim: Claim, study: str, *, arm: dict[str, Any] | None = None,
               baseline: dict[str, Any] | None = None, text: str | None = None,
               tags: tuple[str, ...] = ()) -> Claim:  # fmt: skip
    """The same claim tested on digits: its own id and study, the same family."""
    return Claim(
        f"digits-{claim.id}", text or claim.text, claim.source, study, claim.metric,
        arm or claim.arm, baseline or claim.baseline, claim.direction, claim.margin,
        ("digits", *(t for t in claim.tags if t != "demo"), *tags), family=claim.id,
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "noise20-sam", "Under 20% label noise, SAM reaches a higher test accuracy than SGD.",
        f"{FORET}, §3.3 (label noise); {AF22}", "noise-20", "test_acc",
        # not a demo claim: at the demo's 3 seeds its interval straddles the threshold, and its
        # verdict changed with the CPU (+4.5 [-1.6, +10.6] on one 2-core EPYC, +3.8 [+1.2, +6.4]
        # on another); the suites' 5 seeds settle it
        {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("noise",),
    ),
    Claim(
        "noise40-sam", "Under 40% label noise, SAM reaches a higher test accuracy than SGD.",
        f"{FORET}, §3.3 (label noise); {AF22}", "noise-40", "test_acc",
        {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("noise", "demo"),
    ),
    Claim(
        "noise40-memorise", "Under 40% label noise, SAM fits fewer of the flipped labels than SGD.",
        BAEK, "noise-40", "memorised", {"label": "sam"}, {"label": "sgd"}, -1, 0.01,
        ("noise", "demo"),
    ),
    Claim(
        "finetune-noisy", "Fine-tuning an SGD-trained model with SAM improves its test accuracy "
        "over fine-tuning it with SGD (40% label noise).",
        f"{AF22}, §5 (SAM fine-tuning)", "finetune-noisy", "test_acc",
        {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("finetune", "demo"),
    ),
    Claim(
        "finetune-clean", "Fine-tuning an SGD-trained model with SAM improves its test accuracy "
        "over fine-tuning it with SGD (clean labels).",
        f"{AF22}, §5 (SAM fine-tuning)", "finetune-clean", "test_acc",
        {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("finetune",),
    ),
    Claim(
        "clean-sam", "On clean labels, SAM reaches a higher test accuracy than SGD.",
        FORET, "main", "test_acc", {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("main",),
    ),
    Claim(
        "msharp-small-m", "A smaller m (examples per SAM perturbation) generalises better: "
        "m = 8 beats m = batch size (64), each at its own rho (tuned).",
        f"{FORET}, §4 (m-sharpness); {AF22}, §3", "m-sharpness", "test_acc",
        {"label": "m8"}, {"label": "m64"}, +1, 0.005, ("msharp",),
    ),
    Claim(
        "msam-acc", "mSAM (4 shards of 32) reaches a higher test accuracy than SAM.",
        MSAM, "main", "test_acc", {"label": "msam"}, {"label": "sam"}, +1, 0.005, ("main",),
    ),
    Claim(
        "msam-flat", "mSAM converges to a flatter minimum (smaller top Hessian eigenvalue) than "
        "SAM.", MSAM, "main", "lambda_max", {"label": "msam"}, {"label": "sam"}, -1, 0.0,
        ("main",),
    ),
    Claim(
        "fsam-acc", "Friendly-SAM reaches a higher test accuracy than SAM (each at its tuned rho).",
        FSAM, "main", "test_acc", {"label": "fsam"}, {"label": "sam"}, +1, 0.005, ("main",),
    ),
    Claim(
        "dln-1sam-sparser", "On a diagonal linear network, 1-SAM finds a sparser solution "
        "(smaller l1 norm) than GD (rho = 0.1).",
        f"{AF22}, §3 (diagonal linear networks)", "dln", "l1",
        {"method": "1sam", "rho": 0.1}, {"method": "gd"}, -1, 0.0, ("dln", "demo"),
    ),
    Claim(
        "dln-1sam-better", "On a diagonal linear network, 1-SAM reaches a lower test loss than GD "
        "(rho = 0.1; statistic: log10 of the test loss).",
        f"{AF22}, §3", "dln", "log10_test_loss",
        {"method": "1sam", "rho": 0.1}, {"method": "gd"}, -1, 0.0, ("dln", "demo"),
    ),
    Claim(
        "dln-nsam-better", "On a diagonal linear network, n-SAM (one perturbation from the "
        "full-batch gradient) reaches a lower test loss than GD (rho = 0.1; log10 test loss).",
        f"{AF22}, §3 (n-SAM's implicit bias, weaker than 1-SAM's)", "dln", "log10_test_loss",
        {"method": "nsam", "rho": 0.1}, {"method": "gd"}, -1, 0.0, ("dln", "demo"),
    ),
    Claim(
        "dln-nsam-alpha", "n-SAM trains like GD from a smaller effective initialisation "
        "(mean alpha_eff below GD's; rho = 0.1).",
        f"{AF22}, §3 (the mechanism)", "dln", "alpha_eff_mean",
        {"method": "nsam", "rho": 0.1}, {"method": "gd"}, -1, 0.0, ("dln",),
    ),
    Claim(
        "dln-1sam-vs-nsam", "1-SAM's effect is much stronger than n-SAM's: at the same rho "
        "(0.1) its test loss is lower (log10).",
        f"{AF22}, §3", "dln", "log10_test_loss",
        {"method": "1sam", "rho": 0.1}, {"method": "nsam", "rho": 0.1}, -1, 0.0, ("dln",),
    ),
)  # fmt: skip

_BY_ID = {c.id: c for c in CLAIMS}
CLAIMS += (
    _on_digits(_BY_ID["clean-sam"], "digits-clean"),
    _on_digits(_BY_ID["noise20-sam"], "digits-noise-20"),
    _on_digits(_BY_ID["noise40-sam"], "digits-noise-40"),
    _on_digits(_BY_ID["noise40-memorise"], "digits-noise-40"),
    Claim(
        "digits-noise60-sam", "Under 60% label noise, SAM reaches a higher test accuracy than "
        "SGD.", f"{FORET}, §3.3 (label noise, up to 80% on CIFAR); {AF22}", "digits-noise-60",
        "test_acc", {"label": "sam"}, {"label": "sgd"}, +1, 0.005, ("noise", "digits"),
    ),
    _on_digits(_BY_ID["finetune-noisy"], "digits-finetune-noisy"),
    _on_digits(_BY_ID["msam-acc"], "digits-noise-40",
               text="mSAM (4 shards of 16) reaches a higher test accuracy than SAM (40% label "
               "noise; each at its tuned rho)."),
    _on_digits(_BY_ID["msam-flat"], "digits-noise-40",
               text="mSAM (4 shards of 16) converges to a flatter minimum (smaller top Hessian "
               "eigenvalue) than SAM (40% label noise)."),
    _on_digits(_BY_ID["fsam-acc"], "digits-noise-40",
               text="Friendly-SAM reaches a higher test accuracy than SAM (40% label noise; each "
               "at its tuned rho)."),
    _on_digits(_BY_ID["msharp-small-m"], "digits-m-sharpness", arm={"label": "m4"},
               text="A smaller m generalises better: m = 4 beats m = batch size (64), each at "
               "its own rho (tuned; 40% label noise)."),
)
