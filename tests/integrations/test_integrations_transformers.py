"""samkit under the Hugging Face Trainer (tiny models built from configs, no download): gradient
accumulation equals samkit's micro-batched SAM, max_grad_norm, the Trainer's own weighting of
micro-batches, bf16, resume, hooks and step records, the three ways to pass the optimizer, errors."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")
V5 = int(transformers.__version__.split(".")[0]) >= 5
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)
from transformers_helpers import gpt2, lm_data, lm_labels, lm_loss, tokens  # noqa: E402

import samkit  # noqa: E402
from samkit import SamkitError  # noqa: E402
from samkit.integrations.transformers import SAMTrainer  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        yield


def bert():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=16, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=3)
    return BertForSequenceClassification(cfg).double()


def args(tmp_path, **kw):
    settings = dict(per_device_train_batch_size=2, gradient_accumulation_steps=4, max_steps=1, use_cpu=True,
                    report_to=[], save_strategy="no", logging_steps=1, learning_rate=0.05,
                    lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, disable_tqdm=True,
                    seed=0)
    return TrainingArguments(str(tmp_path / "out"), **{**settings, **kw})


def reference(model, ids, targs, **sam_kw):
    """samkit's own micro-batched SAM on the whole accumulation batch, with the Trainer's AdamW."""
    base, base_kw = Trainer.get_optimizer_cls_and_kwargs(targs, model)
    opt = samkit.SAM(model.parameters(), base, micro_batch_size=targs.per_device_train_batch_size,
                     weight_decay=0.0, **base_kw, **sam_kw)
    loss = opt.train_step(model, lm_loss, (ids, lm_labels(ids)))
    return opt, loss


def assert_same(a, b, atol):
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(v, w, atol=atol, rtol=0, msg=k)


@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["no_clip", "clip"])
def test_accumulation_equals_samkit_micro_batched_sam(tmp_path, clip):
    """gradient_accumulation_steps=4: one perturbation from the whole batch's gradient, as samkit's
    micro_batch_size on the full batch; max_grad_norm is samkit's clipping of the descent gradient."""
    ids = tokens(8)  # one step's examples (the step's mean loss does not depend on their order)
    model = gpt2()
    ref = copy.deepcopy(model)
    targs = args(tmp_path, max_grad_norm=clip)
    trainer = SAMTrainer(model=model, args=targs, train_dataset=lm_data(ids), sam_kwargs={"rho": 0.1})
    trainer.train()
    opt, loss = reference(ref, ids, targs, rho=0.1, max_grad_norm=clip or None)
    assert_same(model, ref, atol=1e-10)
    sam = trainer.sam
    assert trainer.state.global_step == sam.steps == 1 and sam.passes == 2.0
    # a float32 log; transformers 4 rounds the logged loss to 4 decimals
    logged = pytest.approx(float(loss), rel=1e-6) if V5 else pytest.approx(float(loss), abs=5e-5)
    assert trainer.state.log_history[0]["loss"] == logged
    rec = sam.last_step
    assert rec.ascended and rec.taken
    for key in ("loss", "perturbed_loss", "ascent_norm"):
        # GPT-2's loss upcasts the logits to float32, so the losses agree to float32 rounding
        torch.testing.assert_close(getattr(rec, key), getattr(opt.last_step, key), atol=0, rtol=1e-6)
    assert sam.max_grad_norm is None  # the Trainer's setting was used for its steps only
    if clip:  # the clipping changed the update (so the equality above is about clipping)
        unclipped = copy.deepcopy(gpt2())
        reference(unclipped, ids, targs, rho=0.1)
        assert max((a - b).abs().max() for a, b in zip(unclipped.parameters(), ref.parameters())) > 1e-4


def test_rho_zero_is_the_trainer_itself(tmp_path):
    """With rho=0 SAMTrainer must be the Trainer: same weighting of micro-batches (here the Trainer sums
    the model's per-micro-batch means, as it does for models that take loss kwargs), same clipping
    (max_grad_norm=0.5 on), same logged losses, over 3 steps of shuffled data."""
    ids = tokens(24)
    data = [{"input_ids": t, "labels": int(t.sum()) % 3} for t in ids]
    a, b = bert(), bert()
    targs = args(tmp_path, max_steps=3, gradient_accumulation_steps=2, max_grad_norm=0.5, weight_decay=0.1)
    plain = Trainer(model=a, args=targs, train_dataset=data)
    plain.train()
    sam = SAMTrainer(model=b, args=targs, train_dataset=data, sam_kwargs={"rho": 0.0})
    sam.train()
    assert_same(a, b, atol=1e-10)
    losses = [[r["loss"] for r in t.state.log_history if "loss" in r] for t in (plain, sam)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6) and len(losses[0]) == 3  # logged in float32
    assert [r["grad_norm"] for r in sam.state.log_history if "grad_norm" in r] != []


def test_three_ways_to_pass_the_optimizer_agree_and_a_plain_trainer_points_to_samtrainer(tmp_path):
    ids = tokens(8)
    targs = args(tmp_path)
    base, base_kw = Trainer.get_optimizer_cls_and_kwargs(targs, gpt2())
    models = [gpt2() for _ in range(3)]
    SAMTrainer(model=models[0], args=targs, train_dataset=lm_data(ids), sam_kwargs={"rho": 0.1}).train()
    opt = samkit.SAM(models[1].parameters(), base, rho=0.1, weight_decay=0.0, **base_kw)
    SAMTrainer(model=models[1], args=targs, train_dataset=lm_data(ids), optimizers=(opt, None)).train()
    cls_kw = (samkit.SAM, {"base_optimizer": base, "rho": 0.1, **base_kw})
    SAMTrainer(model=models[2], args=targs, train_dataset=lm_data(ids),
               optimizer_cls_and_kwargs=cls_kw).train()
    assert_same(models[0], models[1], atol=1e-12)
    assert_same(models[0], models[2], atol=1e-12)
    assert opt.steps == 1
    with pytest.raises(SamkitError, match="SAMTrainer"):
        Trainer(model=gpt2(), args=targs, train_dataset=lm_data(ids), optimizer_cls_and_kwargs=cls_kw).train()


def test_resume_from_a_trainer_checkpoint_equals_the_uninterrupted_run(tmp_path):
    ids = tokens(16)
    targs = args(tmp_path, max_steps=4, gradient_accumulation_steps=2, save_strategy="steps", save_steps=2,
                 lr_scheduler_type="linear")
    whole = gpt2()
    t1 = SAMTrainer(model=whole, args=targs, train_dataset=lm_data(ids), sam_kwargs={"rho": 0.1})
    t1.train()
    saved = torch.load(tmp_path / "out" / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert saved["samkit"]["steps"] == 2  # the samkit optimizer's own state is the checkpoint's
    resumed = gpt2()
    t2 = SAMTrainer(model=resumed, args=targs, train_dataset=lm_data(ids), sam_kwargs={"rho": 0.1})
    t2.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert_same(whole, resumed, atol=1e-12)
    assert t2.state.global_step == t2.sam.steps == t1.sam.steps == 4
    assert t2.sam.param_groups[0]["lr"] == t1.sam.param_groups[0]["lr"]


def test_step_hooks_fire_once_per_trainer_step(tmp_path):
    model = gpt2()
    opt = samkit.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.05)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o.steps)))
    opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o.steps)))
    targs = args(tmp_path, max_steps=2, gradient_accumulation_steps=2)
    SAMTrainer(model=model, args=targs, train_dataset=lm_data(tokens(8)), optimizers=(opt, None)).train()
    assert calls == [("pre", 0), ("post", 1), ("pre", 1), ("post", 2)]


def test_bf16_autocast_reaches_the_perturbed_pass(tmp_path):
    """bf16=True (accelerate's autocast around forward): the SAM update lands near fp32 SAM's and far
    from the plain step's, so the pass at w + e saw w + e and not autocast's cached copy of w."""
    ids = tokens(8)
    start = torch.nn.utils.parameters_to_vector(gpt2(torch.float32).parameters()).detach()
    model = gpt2(torch.float32)
    targs = args(tmp_path, bf16=True, optim="sgd", learning_rate=0.5)
    SAMTrainer(model=model, args=targs, train_dataset=lm_data(ids), sam_kwargs={"rho": 0.5}).train()
    updates = {}
    for rho in (0.5, 0.0):
        ref = gpt2(torch.float32)
        reference(ref, ids, args(tmp_path, optim="sgd", learning_rate=0.5), rho=rho)
        updates[rho] = torch.nn.utils.parameters_to_vector(ref.parameters()).detach() - start
    bf16 = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - start
    sam_effect = (updates[0.5] - updates[0.0]).norm()
    assert (bf16 - updates[0.5]).norm() < 0.1 * sam_effect, ((bf16 - updates[0.5]).norm(), sam_effect)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda m, a, d: SAMTrainer(model=m, args=a, train_dataset=d, sam_kwargs={"rho": 0.1},
                                    optimizers=(torch.optim.SGD(m.parameters(), lr=0.1), None)),
         "put the settings there"),
        (lambda m, a, d: SAMTrainer(model=m, args=a, train_dataset=d,
                                    optimizers=(torch.optim.SGD(m.parameters(), lr=0.1), None)),
         "SAMTrainer needs a samkit optimizer"),
        (lambda m, a, d: SAMTrainer(model=m, args=a, train_dataset=d, sam_kwargs={"shard_size": 2}),
         "leave shard_size and micro_batch_size unset"),
        (lambda m, a, d: SAMTrainer(model=m, args=a, train_dataset=d, sam_kwargs={"shards": 8}),
         "shards=8 but this step has 4 micro-batch"),
    ],
    ids=["kwargs_and_optimizer", "not_samkit", "shard_size", "too_many_shards"],
)
def test_errors_say_what_to_do(tmp_path, make, match):
    model = gpt2()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(SamkitError, match=match):
        make(model, args(tmp_path), lm_data(tokens(8))).train()
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_import_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "samkit.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install 'samkit\[transformers\]'"):
        import samkit.integrations.transformers  # noqa: F401


def test_ddp_through_accelerate_equals_samkit_ddp(tmp_path):
    """torchrun, 2 gloo processes, gradient accumulation 2, clipping: the replicas are bit-identical
    and equal samkit's own DDP train_step on the micro-batches each rank was given, both with one
    perturbation per rank (the default) and with one for all ranks (sync_perturbation_group_size=2);
    the two differ (so the comparison can tell them apart)."""
    import os
    import subprocess

    worker = Path(__file__).with_name("transformers_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(worker), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in ("per_rank", "global"):
        run = [r[name] for r in ranks]
        assert not torch.equal(run[0]["ids"], run[1]["ids"])  # each rank had its own examples
        assert [r["global_step"] for r in run] == [r["steps"] for r in run] == [3, 3]
        for k, v in run[0]["trainer"].items():
            assert torch.equal(v, run[1]["trainer"][k]), k
            torch.testing.assert_close(v, run[0]["samkit"][k], atol=1e-10, rtol=0, msg=k)
    per_rank, whole = ranks[0]["per_rank"]["trainer"], ranks[0]["global"]["trainer"]
    assert max(float((per_rank[k] - whole[k]).abs().max()) for k in per_rank) > 1e-3


def test_sam_kwargs_are_settings_each_trainer_builds_its_own_optimizer_from(tmp_path):
    """A stateful setting (a cadence) in sam_kwargs is copied for each optimizer built from it, so two
    trainers given the same sam_kwargs train alike (and the user's object stays unused)."""
    settings = {"rho": 0.1, "cadence": samkit.cadence.RandomSwitch(0.5, seed=2)}
    targs = args(tmp_path, max_steps=4, gradient_accumulation_steps=2)
    models = [gpt2(), gpt2()]
    trainers = [SAMTrainer(model=m, args=targs, train_dataset=lm_data(tokens(16)), sam_kwargs=settings)
                for m in models]
    for t in trainers:
        t.train()
    assert_same(models[0], models[1], atol=0)
    assert trainers[0].sam.cadence is not settings["cadence"]
    assert 0 < trainers[0].sam.ascent_steps < 4
