"""A small offline word tokenizer, so GLUE-style data works without ``transformers``.

Lower-cased words and single punctuation marks; the vocabulary is built from the training set
only (most frequent first, ties alphabetical so it is deterministic), with ``[PAD]=0``,
``[UNK]=1``, ``[CLS]=2``, ``[SEP]=3``. Sentence pairs are encoded BERT-style:
``[CLS] a [SEP] b [SEP]`` with ``token_type_ids`` 0 for ``a`` and 1 for ``b``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from samkit.errors import SamkitError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = range(4)
_WORD = re.compile(r"\w+|[^\w\s]")


class WordTokenizer:
    """Word-level tokenizer with a vocabulary fitted on training texts."""

    def __init__(self, vocab: Sequence[str], lowercase: bool = True) -> None:
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise SamkitError(f"a WordTokenizer vocabulary must start with {SPECIALS}")
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.index = {token: i for i, token in enumerate(self.vocab)}

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        max_vocab: int = 30522,
        min_freq: int = 1,
        lowercase: bool = True,
    ) -> WordTokenizer:
        """Build the vocabulary (at most ``max_vocab`` entries, specials included)."""
        if max_vocab <= len(SPECIALS):
            raise SamkitError(f"max_vocab must exceed {len(SPECIALS)}, got {max_vocab}")
        counts = Counter(w for text in texts for w in cls._split(text, lowercase))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIALS, *ranked[: max_vocab - len(SPECIALS)]], lowercase)

    @staticmethod
    def _split(text: str, lowercase: bool) -> list[str]:
        return _WORD.findall(text.lower() if lowercase else text)

    def ids(self, text: str) -> list[int]:
        """Token ids of one text, without special tokens."""
        return [self.index.get(w, UNK) for w in self._split(text, self.lowercase)]

    def __call__(
        self, first: Sequence[str], second: Sequence[str] | None, max_length: int
    ) -> dict[str, Tensor]:
        """Encode (pairs of) texts to ``input_ids``, ``attention_mask``, ``token_type_ids``
        padded/truncated to ``max_length`` (pairs are truncated longest-first, like HF)."""
        specials = 2 if second is None else 3
        if max_length <= specials:
            raise SamkitError(f"max_length must exceed {specials}, got {max_length}")
        n = len(first)
        input_ids = torch.full((n, max_length), PAD, dtype=torch.long)
        token_types = torch.zeros((n, max_length), dtype=torch.long)
        for row in range(n):
            a = self.ids(first[row])
            b = [] if second is None else self.ids(second[row])
            while len(a) + len(b) > max_length - specials:
                if len(a) >= len(b):
                    a.pop()
                else:
                    b.pop()
            tokens = [CLS, *a, SEP] + ([] if second is None else [*b, SEP])
            input_ids[row, : len(tokens)] = torch.tensor(tokens)
            token_types[row, len(a) + 2 : len(tokens)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != PAD).long(),
            "token_type_ids": token_types,
        }
