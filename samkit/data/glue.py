"""GLUE-style sentence(-pair) classification from the GLUE TSV layout under ``root``.

``load_dataset("glue:sst2", root=...)`` reads ``root/SST-2/train.tsv`` and ``dev.tsv`` (dev is
the test split: GLUE test labels are not public). Text is tokenised with a Hugging Face tokenizer
(``tokenizer=`` a name or local path; needs ``transformers``) or, by default, the built-in
:class:`~samkit.data.text.WordTokenizer` fitted on the training sentences (works offline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samkit.data._core import Dataset, Split
from samkit.data._registry import register_dataset
from samkit.data.text import WordTokenizer
from samkit.errors import SamkitError


@dataclass(frozen=True)
class _Task:
    folder: str
    text: tuple[str, ...]  # column names (or indices as strings for header-less files)
    label: str
    labels: tuple[str, ...]  # label strings in class-index order
    dev: str = "dev.tsv"
    header: bool = True


_TASKS: dict[str, _Task] = {
    "sst2": _Task("SST-2", ("sentence",), "label", ("0", "1")),
    "mrpc": _Task("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1")),
    "cola": _Task("CoLA", ("3",), "1", ("0", "1"), header=False),
    "qqp": _Task("QQP", ("question1", "question2"), "is_duplicate", ("0", "1")),
    "qnli": _Task("QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment")),
    "rte": _Task("RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment")),
    "wnli": _Task("WNLI", ("sentence1", "sentence2"), "label", ("0", "1")),
    "mnli": _Task(
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        dev="dev_matched.tsv",
    ),
}


def _read_tsv(path: Path, task: _Task) -> tuple[list[list[str]], list[int], int]:
    """Texts per column, labels, and the number of malformed rows skipped."""
    if not path.is_file():
        raise SamkitError(
            f"GLUE file not found: {path}. Expected the GLUE layout root/{task.folder}/train.tsv "
            f"and {task.dev} (as unpacked by the GLUE download script); set root accordingly."
        )
    # utf-8-sig: some GLUE files start with a byte-order mark before the header.
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if task.header:
        header = lines[0].split("\t") if lines else []
        missing = [c for c in (*task.text, task.label) if c not in header]
        if missing:
            raise SamkitError(f"{path}: header lacks column(s) {missing}; found {header}")
        columns = [header.index(c) for c in task.text]
        label_col, width, rows = header.index(task.label), len(header), lines[1:]
    else:
        columns, label_col = [int(c) for c in task.text], int(task.label)
        width, rows = max(*columns, label_col) + 1, lines
    texts: list[list[str]] = [[] for _ in columns]
    labels: list[int] = []
    skipped = 0
    for line in rows:
        # Split on tabs only: GLUE text contains unbalanced quotes, so no CSV quoting rules.
        fields = line.split("\t")
        if len(fields) < width or fields[label_col] not in task.labels:
            skipped += 1
            continue
        for column, values in zip(columns, texts, strict=True):
            values.append(fields[column])
        labels.append(task.labels.index(fields[label_col]))
    if not labels:
        raise SamkitError(f"{path}: no usable rows (labels must be one of {task.labels})")
    return texts, labels, skipped


@register_dataset("glue", prefix=True)
def load_glue(
    root: Path | None = None,
    download: bool = False,
    task: str = "sst2",
    tokenizer: str | None = None,
    max_length: int = 128,
    max_vocab: int = 30522,
    min_freq: int = 1,
    lowercase: bool = True,
) -> Dataset:
    """A GLUE task as ``{input_ids, attention_mask, token_type_ids}`` tensors ``[N, max_length]``.

    Options: ``tokenizer`` (HF name or path; default: built-in word tokenizer), ``max_length``,
    and for the built-in tokenizer ``max_vocab``, ``min_freq``, ``lowercase``.
    """
    key = task.lower().replace("-", "")
    if key not in _TASKS:
        raise SamkitError(f"unknown GLUE task {task!r}; known: {', '.join(sorted(_TASKS))}")
    if root is None:
        raise SamkitError(f"glue:{key} needs root= (the folder that holds {_TASKS[key].folder}/)")
    if download:
        raise SamkitError(
            "GLUE cannot be downloaded by samkit; fetch it with the GLUE download script or the "
            "Hugging Face 'glue' dataset exported to TSV, then pass root="
        )
    spec = _TASKS[key]
    train_texts, train_labels, train_skipped = _read_tsv(root / spec.folder / "train.tsv", spec)
    test_texts, test_labels, test_skipped = _read_tsv(root / spec.folder / spec.dev, spec)
    pair = len(spec.text) == 2

    if tokenizer is None:
        word = WordTokenizer.fit(
            [t for column in train_texts for t in column], max_vocab, min_freq, lowercase
        )
        encode: Callable[[list[str], list[str] | None, int], dict[str, torch.Tensor]] = word
        tokenizer_info: dict[str, Any] = {"kind": "samkit word", "vocab_size": len(word.vocab)}
    else:
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise SamkitError(
                f"tokenizer={tokenizer!r} needs transformers (pip install transformers); "
                "or leave tokenizer unset to use the built-in word tokenizer"
            ) from err
        hf = AutoTokenizer.from_pretrained(tokenizer)

        def encode_hf(
            first: list[str], second: list[str] | None, length: int
        ) -> dict[str, torch.Tensor]:
            out = hf(
                first,
                second,
                padding="max_length",
                truncation=True,
                max_length=length,
                return_tensors="pt",
            )
            return {k: v.long() for k, v in out.items()}

        encode = encode_hf
        tokenizer_info = {"kind": "huggingface", "name": tokenizer, "vocab_size": len(hf)}

    def split(texts: list[list[str]], labels: list[int]) -> Split:
        inputs = encode(texts[0], texts[1] if pair else None, max_length)
        return Split(inputs, torch.tensor(labels, dtype=torch.long))

    return Dataset(
        name=f"glue:{key}",
        num_classes=len(spec.labels),
        input_shape=(max_length,),
        train=split(train_texts, train_labels),
        test=split(test_texts, test_labels),
        info={
            "source": f"GLUE {spec.folder} TSV ({root / spec.folder}); test split = {spec.dev}",
            "tokenizer": tokenizer_info,
            "vocab_size": tokenizer_info["vocab_size"],
            "max_length": max_length,
            "label_names": list(spec.labels),
            "skipped_rows": {"train": train_skipped, "test": test_skipped},
        },
    )
