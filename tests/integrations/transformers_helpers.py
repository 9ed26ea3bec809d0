"""A tiny GPT-2 from a config (no download) and its data, shared by the Hugging Face Trainer tests
and their DDP worker."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SEQ = 6


def gpt2(dtype=torch.float64):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).to(dtype)


def tokens(n, seed=1):
    return torch.randint(0, 30, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def lm_labels(ids):
    """Next-token labels; the first position, which no prediction targets, is -100 so that the
    Trainer's count of label tokens (num_items_in_batch) is the count the loss averages over."""
    labels = ids.clone()
    labels[:, 0] = -100
    return labels


def lm_data(ids):
    return [{"input_ids": t, "labels": lab} for t, lab in zip(ids, lm_labels(ids))]


def lm_loss(model, batch):
    ids, labels = batch
    return model(input_ids=ids, labels=labels).loss
