"""copkit.train: schedule, EMA, deterministic batches, atomic safetensors checkpoints, resume after
a kill giving the same weights as an uninterrupted run, and a clean stop on a non-finite loss."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn

from copkit.checkpoint import load_tensors, read_metrics, save_tensors
from copkit.config import config_hash
from copkit.recipe import TrainConfig, batch_indices
from copkit.step import EMA, cosine_lr
from copkit.train import TrainingDiverged, train


def test_cosine_schedule_closed_form():
    base, total, warm = 2.0, 110, 10
    assert [cosine_lr(s, total, base, warm) for s in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    for s in (10, 35, 60, 85, 110):
        want = 0.5 * base * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
        assert cosine_lr(s, total, base, warm) == pytest.approx(want)
    assert cosine_lr(200, total, base, warm, final_lr=0.1) == pytest.approx(0.1)


def test_ema_closed_form():
    m = nn.Linear(3, 1)
    ema = EMA(m, decay=0.9)
    s0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.fill_(1.0)
    for _ in range(5):
        ema.update(m)
    assert torch.allclose(ema.shadow["weight"], 1.0 + 0.9**5 * (s0 - 1.0))


def test_batches_cover_each_epoch_once():
    n, b = 23, 5
    seen = torch.cat([batch_indices(n, b, s, seed=3) for s in range(4)])  # one epoch = 4 batches
    assert seen.unique().numel() == 20
    assert torch.equal(batch_indices(n, b, 6, 3), batch_indices(n, b, 6, 3))
    # next epoch reshuffled
    assert not torch.equal(batch_indices(n, b, 0, 3), batch_indices(n, b, 4, 3))
    with pytest.raises(ValueError, match="larger than the data set"):
        batch_indices(3, 5, 0, 0)


def test_config_hash_sensitive_to_every_field():
    cfg = TrainConfig(steps=10, batch_size=4)
    assert config_hash(cfg) == config_hash(TrainConfig(steps=10, batch_size=4))
    assert config_hash(cfg) != config_hash(TrainConfig(steps=10, batch_size=4, lr=2e-3))


def test_save_tensors_is_plain_safetensors(tmp_path):
    path = save_tensors(tmp_path / "x.safetensors",
                        {"a": torch.arange(3.0), "s": torch.tensor(2.0)}, {"k": [1, 2]})
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["json"]) == {"k": [1, 2]}
    t, meta = load_tensors(path)
    assert torch.equal(t["a"], torch.arange(3.0)) and t["s"].item() == 2.0 and meta == {"k": [1, 2]}


# ------------------------------------------------------------------ a small regression problem
def problem(seed: int = 0):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, x, y


def make_step(model, x, y, bs, seed, fail_at=None, nan_at=None):
    def step_fn(step, gen):
        if step == fail_at:
            raise KeyboardInterrupt("killed")
        idx = batch_indices(len(x), bs, step, seed)
        noise = 0.01 * torch.randn(len(idx), generator=gen)  # a random draw per step
        loss = ((model(x[idx]).squeeze(1) - y[idx] - noise) ** 2).mean()
        if step == nan_at:
            loss = loss * float("nan")
        return loss, "main", {"mse": loss.item()}
    return step_fn


def run(tmp, steps, stop_after=None, fail_at=None, nan_at=None, ckpt_every=4):
    model, opt, x, y = problem()
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=2, ckpt_every=ckpt_every,
                      log_every=1, eval_every=5, ema_decay=0.9)
    hist = train({"net": model}, {"main": opt},
                 make_step(model, x, y, 8, cfg.seed, fail_at, nan_at), cfg, tmp,
                 config={"cfg": cfg},
                 evaluate=lambda s: {"val": float(model(x).pow(2).mean().detach())},
                 stop_after=stop_after, progress=False)
    return model, hist


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    full, full_hist = run(tmp_path / "full", 20)
    # stopped cleanly at a checkpoint, then resumed in a new process-like fresh model
    run(tmp_path / "a", 20, stop_after=8)
    resumed, hist_a = run(tmp_path / "a", 20)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # killed between checkpoints (step 10, last checkpoint at 8): the lost steps are redone
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 20, fail_at=10)
    resumed_b, hist_b = run(tmp_path / "b", 20)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed_b.state_dict()[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(hist_b) == strip(full_hist) == strip(hist_a)
    ema_full, _ = load_tensors(tmp_path / "full" / "checkpoint.safetensors")
    ema_b, _ = load_tensors(tmp_path / "b" / "checkpoint.safetensors")
    assert all(torch.equal(ema_full[k], ema_b[k]) for k in ema_full)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became nan at step 6; no update was applied"):
        run(tmp_path, 20, nan_at=6)
    tensors, meta = load_tensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 4
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")) <= 6


def test_resume_refuses_another_config(tmp_path):
    run(tmp_path, 6, stop_after=4)
    model, opt, x, y = problem()
    cfg = TrainConfig(steps=6, batch_size=8, lr=5e-3)
    with pytest.raises(ValueError, match="written by another configuration"):
        train({"net": model}, {"main": opt}, make_step(model, x, y, 8, 0), cfg, tmp_path,
              config={"cfg": cfg}, progress=False)


def test_host_generator_keeps_cpu_draws_and_moves_gpu_ones_to_the_host():
    from copkit.recipe import host_generator, step_generator

    g = step_generator(3, 7)
    # the CPU runs draw exactly as before
    assert host_generator(g) is g and host_generator(None) is None
    if torch.cuda.is_available():
        cuda = step_generator(3, 7, "cuda")
        h = host_generator(cuda)
        assert h.device.type == "cpu" and h.initial_seed() == cuda.initial_seed()


def test_compile_blocks_keeps_names_and_outputs():
    from timm.models.vision_transformer import Block

    from copkit.step import compile_blocks

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), Block(16, 2), Block(16, 2))
    x = torch.randn(2, 5, 8)
    keys, eager = list(net.state_dict()), net(x)
    # the wrapping, not the kernels: dynamo's graphs run eagerly (inductor's kernels cost ~35 s
    # of gcc on a cold cache; `make bench` compiles CoMAE's and checks them against eager masks)
    assert compile_blocks(net, backend="eager") == 2
    compiled = [blk._compiled_call_impl for blk in net[1:]]
    assert all(c is not None for c in compiled)
    assert compile_blocks(net) == 2  # a second call leaves them alone
    assert [blk._compiled_call_impl for blk in net[1:]] == compiled
    assert list(net.state_dict()) == keys  # checkpoints are unchanged by compiling
    torch.testing.assert_close(net(x), eager, rtol=1e-4, atol=1e-5)
