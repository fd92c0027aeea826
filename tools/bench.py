"""`make bench`: speed and efficiency measurements, never part of the tests.

Writes book/results/bench.json and prints a table. Measured on this machine, in one run, so the
ratios compare like with like:

- CoMAE ``masks()``: images per second and masks (targets) per second for a batch of Fashion-MNIST
  images at the `cpu` (or given) profile's model size; its achieved FLOP/s (FLOPs counted with
  torch's FlopCounterMode, attention included through the math kernel) divided by the FLOP/s of
  one large matrix multiply on the same device.
- The exact Gaussian model of Chapter 1: fit, greedy order and prefix curves.
- Batched PageRank (copkit.rank) against networkx looped over the same graphs, N = 49 and 256.
- The CViT classifier (Chapter 5) at the profile's size: images per second keeping 100%, 50% and 22%
  of the 49 patch tokens, measured in one interleaved run, as ratios to 100%, beside the FLOP
  ratios (the limit a token drop could reach).
- CoMAE training at the profile's size: steps per second and the achieved fraction of the matmul
  FLOP/s (forward and backward counted).
- Eager training steps of the profile's CoMAE, MAR and CViT: milliseconds and ATen operators per
  step. On a GPU these small models are bound by kernel launches, so microseconds per operator,
  times each chapter's operators, is what sizes the `gpu` profile (copkit/configs/gpu.yaml).
- torch.compile: training steps per second of the profile's CoMAE and MAR, eager and with every
  transformer block compiled (copkit.step.compile_blocks), under the profile's precision, after
  a warm-up that pays the compilation (its seconds reported apart). A profile sets ``compile``
  where this shows it pays.
- The paper's configurations (configs/paper/*.toml): one training step of each model at a small
  batch, timed and its FLOPs counted, scaled to the configured batch and steps: the hours on this
  device, and on an H200 at an assumed 40% of its 989 TFLOP/s dense bf16 peak (a typical share
  for transformer training; measured instead when this runs on the GPU itself). The collapse
  orders of ImageNet-1k (1,331,167 images) from the paper-size CoMAE are extrapolated the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copkit import cmar as cmar_mod  # noqa: E402
from copkit import comae as comae_mod  # noqa: E402
from copkit import cvit as cvit_mod  # noqa: E402
from copkit.comae import CoMAE  # noqa: E402
from copkit.cvit import make_vit, n_keep  # noqa: E402
from copkit.data import load_fashion_mnist  # noqa: E402
from copkit.efficiency import (  # noqa: E402
    OpCount,
    best_time,
    count_flops,
    throughput,
    train_steps,
    vit_flops,
)
from copkit.entropy import GaussianTokens  # noqa: E402
from copkit.io import atomic_write_json  # noqa: E402
from copkit.profiles import get_profile, pick_device  # noqa: E402
from copkit.rank import collapse_order, pagerank  # noqa: E402
from copkit.results import git_commit  # noqa: E402
from copkit.step import StepRunner  # noqa: E402
from copkit.tokens import N_TOKENS, PATCH, patchify, random_orders  # noqa: E402


def matmul_flops(dev: torch.device, sync, n: int | None = None, dtype=torch.float32) -> float:
    """FLOP/s of large square matrix products: the practical limit. On a GPU, 8192^3 and ten
    products per timing (a 2048^3 product lasts ~20 us on an H200, too short to outweigh the launch
    and sync)."""
    n = n or (8192 if dev.type == "cuda" else 2048)
    k = 10 if dev.type == "cuda" else 1
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    seconds = best_time(lambda: [a @ b for _ in range(k)], repeat=5, sync=sync)
    return k * 2 * n**3 / seconds


def bench_masks(profile: str, dev: torch.device, sync, images: int) -> dict:
    p = get_profile(profile).comae
    cfg = comae_mod.from_profile(p, 0)[0]  # the profile's CoMAE, as the chapters train it
    torch.manual_seed(0)
    model = CoMAE(cfg).to(dev).eval()
    x, _ = load_fashion_mnist("test", limit=images)
    tokens = patchify(x, PATCH).to(dev)
    # masks() runs in float32, as the orders need
    peak = matmul_flops(dev, sync, dtype=torch.float32)

    def measure() -> tuple[float, float]:  # (seconds, counted FLOPs) of the eager masks()
        seconds = best_time(lambda: model.masks(tokens), repeat=3, sync=sync)
        return seconds, count_flops(model.masks, tokens[:8]) / 8 * images

    # before: the selector's last block in full for every token (timm's EvaBlock as it is),
    # though only the [cls] output is read; the instance attribute shadows Selector.body
    model.f.body = lambda kept, target: model.f.norm(model.f.encode(kept, target)[:, 0])
    full_s, full_flops = measure()
    seconds_64 = best_time(lambda: model.masks(tokens, chunk=64), repeat=3, sync=sync)
    del model.f.body
    seconds, flops = measure()  # the last block for [cls] only (comae.first_token_block)
    # compiles (once); inductor's kernels must give the eager masks (the unit tests run the
    # compiled graphs on aot_eager, sparing CI a minute of gcc)
    drift = (model.masks(tokens[:8], compiled=True) - model.masks(tokens[:8])).abs().max().item()
    if drift > 1e-5:
        raise AssertionError(f"compiled masks differ from the eager ones by {drift:.2e} (> 1e-5)")
    compiled_s = best_time(lambda: model.masks(tokens, compiled=True), repeat=3, sync=sync)
    end_to_end = best_time(lambda: collapse_order(model.masks(tokens)), repeat=3, sync=sync)
    end_to_end_c = best_time(lambda: collapse_order(model.masks(tokens, compiled=True)), repeat=3,
                             sync=sync)
    return {"profile": profile, "images": images, "seconds": seconds,
            "chunk": comae_mod.masks_chunk(dev),
            "images_per_s": images / seconds, "masks_per_s": images * cfg.n_tokens / seconds,
            "gflop_per_image": flops / images / 1e9, "achieved_gflops": flops / seconds / 1e9,
            "matmul_gflops": peak / 1e9, "fraction_of_matmul": flops / seconds / peak,
            "images_per_s_compiled": images / compiled_s,
            "fraction_of_matmul_compiled": flops / compiled_s / peak,
            "images_per_s_full_last_block": images / full_s,
            "gflop_per_image_full_last_block": full_flops / images / 1e9,
            "fraction_of_matmul_full_last_block": full_flops / full_s / peak,
            "images_per_s_chunk64": images / seconds_64,
            "fraction_of_matmul_chunk64": full_flops / seconds_64 / peak,
            "orders_per_s": images / end_to_end,
            "orders_per_s_compiled": images / end_to_end_c}


def bench_make_orders(profile: str, nproc: int) -> dict:
    """What `make orders` costs: the wall time of ranking all 70,000 Fashion-MNIST images with the
    shipped CoMAE, one single-threaded process per core under torchrun (compile included), into a
    scratch folder whose pretrained/ links the shipped CoMAE but not its orders file. When
    data/pretrained/ has no orders file for this CoMAE yet, the one made here is moved there."""
    import os
    import shutil
    import subprocess
    import tempfile

    from copkit import pretrained
    plan_path = pretrained.path_of("comae", get_profile(profile).pretrain, None)
    scratch = ROOT / ".scratch" if (ROOT / ".scratch").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        folder = Path(tmp) / "pretrained"
        folder.mkdir()
        for suffix in (".safetensors", ".json", ".metrics.jsonl"):
            src = plan_path.with_name(plan_path.stem + suffix)
            (folder / src.name).symlink_to(src.resolve())
        env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone",
               f"--nproc_per_node={nproc}", "-m", "copkit", "rank", "--profile", profile,
               "--device", "cpu", "--data-dir", tmp]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        made = list(folder.glob("orders-*.npz"))
        if len(made) != 1:
            raise RuntimeError(f"the ranking left {len(made)} orders files in {folder}")
        shipped = plan_path.parent / made[0].name
        if not shipped.exists():  # the same file `make orders` makes: kept, not made twice
            shutil.move(made[0], shipped)
    return {"profile": profile, "processes": nproc, "images": 70000, "seconds": seconds,
            "orders_per_s": 70000 / seconds, "commit": git_commit(ROOT), "comae": plan_path.stem}


def bench_pagerank(graphs: int = 1000) -> dict:
    """Batched copkit.rank.pagerank against networkx.pagerank looped over the same graphs, both on
    the CPU (networkx has no GPU)."""
    import networkx as nx
    import numpy as np

    out = {}
    for n in (49, 256):
        # networkx at N=256 is slow: fewer graphs, same per-graph rate
        count = graphs if n == 49 else graphs // 10
        a = torch.rand(count, n, n, generator=torch.Generator().manual_seed(n))
        a.diagonal(dim1=1, dim2=2).zero_()
        t = time.perf_counter()
        ours = pagerank(a, tol=1e-10).scores
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = []
        for g in a.numpy():
            pr = nx.pagerank(nx.from_numpy_array(g, create_using=nx.DiGraph), alpha=0.85, tol=1e-10)
            ref.append([pr[i] for i in range(n)])
        t_nx = time.perf_counter() - t
        out[f"n{n}"] = {"device": "cpu", "graphs": count, "copkit_s": t_ours, "networkx_s": t_nx,
                        "speedup": t_nx / t_ours,
                        "max_abs_diff": float(np.abs(ours.numpy() - np.array(ref)).max())}
    return out


def bench_entropy() -> dict:
    """Chapter 1's exact Gaussian model, on the CPU in float64 as the chapter runs it."""
    x, _ = load_fashion_mnist("train")
    tokens = patchify(x, PATCH)
    t = time.perf_counter()
    model = GaussianTokens.fit(tokens)
    fit = time.perf_counter() - t
    greedy = best_time(model.greedy_order, repeat=1)
    orders = random_orders(64, N_TOKENS)
    curves = best_time(lambda: model.prefix_curve(orders), repeat=1)
    return {"device": "cpu", "fit_60000_s": fit, "greedy_order_s": greedy,
            "prefix_curves_per_s": 64 / curves}


def bench_cvit(profile: str, dev: torch.device, images: int) -> dict:
    """CViT's classifier at keep ratios 1.0, 0.5, 0.22: images/s in one run, and FLOP ratios."""
    p = get_profile(profile).cvit
    torch.manual_seed(0)
    vit = make_vit(cvit_mod.from_profile(p, 0, kind="vit")[0]).to(dev).eval()
    x, _ = load_fashion_mnist("test", limit=images)
    keeps = {1.0: N_TOKENS, 0.5: n_keep(0.5), 0.22: n_keep(0.78)}
    ips = throughput(vit, list(keeps.values()), x)
    flops = {k: vit_flops(vit, k) for k in keeps.values()}
    full = keeps[1.0]
    return {"profile": profile, "images": images, "width": p.width, "depth": p.depth,
            "keep": {str(r): {"tokens": k, "images_per_s": ips[k], "speedup": ips[k] / ips[full],
                              "gflop_per_image": flops[k] / 1e9,
                              "flop_ratio": flops[full] / flops[k]}
                     for r, k in keeps.items()}}


H200_BF16_DENSE = 989.4e12  #: NVIDIA's dense bf16 peak for the H200 (SXM), FLOP/s
ASSUMED_MFU = 0.40
IMAGENET_IMAGES = 1_281_167 + 50_000


def _paper_step(recipe, model_cfg, train_cfg, data, batch: int, dev: torch.device,
                sync) -> tuple[float, float]:
    """(seconds, FLOPs) of one training step of a paper-size model at a small ``batch``, taken as
    copkit.train.train takes it (copkit.step.StepRunner: the configured precision, clipping, the
    update, the EMA), made as copkit.train.fit makes it (copkit.recipe.Recipe.setup)."""
    tc = dataclasses.replace(train_cfg, batch_size=batch, compile=False)
    runner = StepRunner.of(recipe.setup(model_cfg, tc, data, dev), tc, dev)
    seconds = best_time(lambda: runner(0), repeat=1, sync=sync)
    return seconds, float(count_flops(runner, 0))


def bench_comae_training(profile: str, dev: torch.device, sync, peak: float) -> dict:
    """Training steps per second of the profile's CoMAE (alternating f and g steps), each step as
    copkit.train.train takes it (copkit.step.StepRunner: schedule, clipping, the update, the
    EMA)."""
    x, y = load_fashion_mnist("train", limit=2048)
    trainee, tc = _training("comae", profile, dev, x, y)
    runner = StepRunner.of(trainee, tc, dev)
    train_steps(runner, 0, 4)
    sync()
    t0 = time.perf_counter()
    train_steps(runner, 4, 20)
    sync()
    seconds = (time.perf_counter() - t0) / 20
    flops = count_flops(train_steps, runner, 100, 2) / 2  # one f step and one g step
    return {"profile": profile, "batch_images": tc.batch_size,
            "targets_per_image": trainee.model.cfg.targets_per_image, "precision": tc.precision,
            "steps_per_s": 1 / seconds, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "fraction_of_matmul": flops / seconds / peak}


def _training(name: str, profile: str, dev: torch.device, x: torch.Tensor, y: torch.Tensor):
    """The profile's ``name`` model (comae, mar, cvit) as copkit.train.fit makes it
    (copkit.recipe.Recipe.setup: the network of its ``from_profile`` configuration, its optimisers
    and step function), and the TrainConfig, on ``dev``, for a few steps on the images ``x`` (in
    [-1, 1]) and labels ``y``: (trainee, TrainConfig)."""
    from copkit import cmar, comae, cvit

    p = get_profile(profile)
    if name == "comae":
        module, (model_cfg, train_cfg) = comae, comae.from_profile(p.comae, 0)
        data = comae.CoMAEData(patchify(x, PATCH).to(dev), patchify(x[:8], PATCH))
    elif name == "mar":
        module, (model_cfg, train_cfg) = cmar, cmar.from_profile(p.cmar, 0)
        data = cmar.MARData(x, y)
    else:
        module, (model_cfg, train_cfg) = cvit, cvit.from_profile(p.cvit, 0)
        g = torch.Generator().manual_seed(0)
        data = cvit.CViTData(x, y,
                             torch.stack([torch.randperm(N_TOKENS, generator=g)
                                          for _ in range(len(x))]))
    return module.RECIPE.setup(model_cfg, train_cfg, data, dev), train_cfg


def bench_step_costs(profile: str, dev: torch.device, sync, steps: int = 20) -> dict:
    """Training steps of the profile's CoMAE, MAR and CViT as copkit.train.train runs them
    (autocast, clipping, the optimiser, the EMA, logging every few steps): milliseconds and ATen
    operators per step, each the difference of a run of ``4 + steps`` steps and one of 4, so that
    start-up costs cancel. The models are small, so on a GPU a step costs its operators' launches
    more than their
    FLOPs: microseconds per operator is what sizes the `gpu` profile's step counts."""
    import tempfile

    from copkit.train import train

    x, y = load_fashion_mnist("train", limit=2048)

    def run(name: str, n: int, count: bool) -> tuple[float, int, object]:
        trainee, tc = _training(name, profile, dev, x, y)
        tc = dataclasses.replace(tc, steps=n, ckpt_every=10**9, compile=False)
        counter = OpCount()
        with tempfile.TemporaryDirectory() as d:
            sync()
            t0 = time.perf_counter()
            with counter if count else contextlib.nullcontext():
                train({name: trainee.model}, trainee.optimizers, trainee.step_fn, tc, d,
                      {"bench": name}, device=dev, progress=False)
            sync()
            return time.perf_counter() - t0, counter.ops, tc

    out = {}
    for name in ("comae", "mar", "cvit"):
        # warm-up: the first run in a process pays one-off costs (threads, kernels)
        run(name, 4, False)
        (short, _, tc), (long, _, _) = run(name, 4, False), run(name, 4 + steps, False)
        ms = (long - short) / steps * 1e3
        ops = (run(name, 4 + steps // 4, True)[1] - run(name, 4, True)[1]) / (steps // 4)
        out[name] = {"batch": tc.batch_size, "precision": tc.precision, "ms_per_step": ms,
                     "ops_per_step": ops, "us_per_op": ms * 1e3 / ops}
    return out


def bench_compile(profile: str, dev: torch.device, sync, steps: int = 20) -> dict:
    """Training steps/s of the profile's CoMAE and MAR, eager and with compiled blocks (the
    TrainConfig's ``compile``, as a profile sets it), each step as copkit.train.train takes it."""
    x, y = load_fashion_mnist("train", limit=2048)
    out = {}
    for name in ("comae", "mar"):
        row = {}
        for mode in ("eager", "compiled"):
            trainee, tc = _training(name, profile, dev, x, y)
            runner = StepRunner.of(trainee, dataclasses.replace(tc, compile=mode == "compiled"),
                                   dev)
            t0 = time.perf_counter()
            # warm-up: MAR's varying mask ratios give several shapes; compiling happens here
            train_steps(runner, 0, 8)
            sync()
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            train_steps(runner, 8, steps)
            sync()
            row[mode] = {"steps_per_s": steps / (time.perf_counter() - t0), "warmup_s": warm,
                         "blocks": runner.compiled}
            del trainee, runner
        row["speedup"] = row["compiled"]["steps_per_s"] / row["eager"]["steps_per_s"]
        row["precision"] = tc.precision
        out[name] = row
    return out


def train_cost(recipe, model_cfg, tc, data, dev: torch.device, sync, peak: float,
               steps: int = 6) -> dict:
    """What training a fresh model of ``recipe`` costs per image at ``tc.batch_size``: images/s
    over ``steps`` steps (copkit.efficiency.train_rate: made as copkit.train.fit makes it, stepped
    as copkit.train.train steps it), GFLOPs per image (forward and backward, counted over two steps,
    since MAR's mask ratio changes a step's count), the seconds of an epoch of 55,000 images, and
    the share of the large-matmul limit ``peak`` (FLOP/s, :func:`matmul_flops`) it achieves."""
    from copkit.efficiency import train_rate

    r = train_rate(recipe, model_cfg, tc, data, steps=steps, device=dev, sync=sync) * tc.batch_size
    runner = StepRunner.of(recipe.setup(model_cfg, tc, data, dev), tc, dev)
    flops = count_flops(train_steps, runner, 0, 2) / 2 / tc.batch_size
    return {"batch": tc.batch_size, "images_per_s": r, "epoch_s": 55000 / r,
            "gflop_per_image": flops / 1e9, "fraction_of_matmul": flops * r / peak}


def bench_pretrain(dev: torch.device, sync, peak: float,
                   batches: tuple[int, ...] = (32, 64, 128, 256), steps: int = 6) -> dict:
    """Training images/s of each base model of ``make pretrain``: at the `cpu` profile's chapter
    setting it replaced ("before": the chapters trained each model from scratch at that size), at
    copkit/configs/pretrain.yaml's setting ("after"), and over batch sizes at the pretrain width,
    with the seconds one epoch of 55,000 images costs and the share of the large-matmul limit.
    The cheapest epoch is not always the config's batch: a smaller batch takes more optimiser steps
    per epoch, which the short CoMAE runs needed more than speed. (The classifier has no "before":
    no profile sizes it any more, it is only ever the shipped base model.)"""
    from copkit import cmar, cvit, pretrained

    p = get_profile("cpu")
    before = {"vit": cvit.from_profile(p.cvit, 0, kind="vit"), "mar": cmar.from_profile(p.cmar, 0)}
    config = pretrained.read_config()
    out = {}
    for name in (n for n in config if n not in ("name", "data")):
        plan = pretrained.plan(name, config)
        data = plan.data
        if isinstance(data, comae_mod.CoMAEData):
            data = comae_mod.CoMAEData(data.tokens[:4096], data.val_tokens)
        else:
            data = dataclasses.replace(data, images=data.images[:4096], labels=data.labels[:4096])

        def rate(recipe, model_cfg, tc, data) -> dict:
            return train_cost(recipe, model_cfg, tc, data, dev, sync, peak, steps)

        row = {"after": rate(plan.recipe, plan.model_cfg, plan.train_cfg, data),
               "batches": [rate(plan.recipe, plan.model_cfg,
                                dataclasses.replace(plan.train_cfg, batch_size=b), data)
                           for b in batches]}
        if name in before:
            row["before"] = rate(plan.recipe, *before[name], data)
        out[name] = row
    return out


def _masks_cost(model_cfg, tokens: torch.Tensor, dev: torch.device, sync) -> tuple[float, float]:
    """(seconds, FLOPs) of the masks of every target of one image (``tokens`` (1, N, d)) by a
    fresh CoMAE of ``model_cfg``: what ranking one image costs."""
    torch.manual_seed(0)
    comae = CoMAE(model_cfg).to(dev).eval()
    seconds = best_time(lambda: comae.masks(tokens, chunk=1), repeat=1, sync=sync)
    return seconds, float(count_flops(comae.masks, tokens, chunk=1))


def bench_paper(dev: torch.device, sync) -> dict:
    """Hours of the paper-size configurations, from one timed and counted training step each, on
    random data of the configured shapes (the tokens a VAE would give, for MAR)."""
    from copkit.config import load
    from copkit.stages import STAGES
    from copkit.tokens import patchify

    folder = ROOT / "configs" / "paper"
    out = {}

    def record(name: str, cfg, batch: int, seconds: float, flops: float, steps: int,
               unit_batch: int) -> None:
        per_step_s, per_step_flops = seconds * unit_batch / batch, flops * unit_batch / batch
        out[name] = {"config": f"configs/paper/{name}.toml", "measured_batch": batch,
                     "batch": unit_batch, "steps": steps, "tflop_per_step": per_step_flops / 1e12,
                     "total_eflop": per_step_flops * steps / 1e18,
                     "hours_this_device": per_step_s * steps / 3600,
                     "h200_hours_at_assumed_mfu": per_step_flops * steps
                     / (ASSUMED_MFU * H200_BF16_DENSE) / 3600}

    c = load(STAGES["train-comae"][0], folder / "train-comae.toml")
    tokens = torch.randn(1, c.model.n_tokens, c.model.token_dim)
    seconds, flops = _paper_step(comae_mod.RECIPE, c.model, c.train,
                                 comae_mod.CoMAEData(tokens, tokens), 1, dev, sync)
    record("train-comae", c, 1, seconds, flops, c.train.steps, c.train.batch_size)
    seconds, flops = _masks_cost(c.model, tokens.to(dev), dev, sync)
    out["rank-imagenet"] = {"config": "configs/paper/rank.toml", "images": IMAGENET_IMAGES,
                            "gflop_per_image": flops / 1e9,
                            "hours_this_device": seconds * IMAGENET_IMAGES / 3600,
                            "h200_hours_at_assumed_mfu": flops * IMAGENET_IMAGES
                            / (ASSUMED_MFU * H200_BF16_DENSE) / 3600}
    for name in ("train-mar", "train-cmar"):
        m = load(STAGES["train-cmar"][0], folder / f"{name}.toml")
        b, (h, w) = 2, m.model.grid
        # what the VAE makes of b images: one token per position
        latents = torch.randn(b, m.model.token_dim, h, w)
        orders = torch.stack([torch.randperm(m.model.n_tokens) for _ in range(b)])
        data = cmar_mod.MARData(latents, torch.zeros(b, dtype=torch.long), m.kind, orders,
                                m.random_fraction,
                                tokenizer=lambda x, generator=None, shard=None: patchify(x, 1),
                                stride=1)
        seconds, flops = _paper_step(cmar_mod.RECIPE, m.model, m.train, data, b, dev, sync)
        record(name, m, b, seconds, flops, m.train.steps, m.train.batch_size)
    v = load(STAGES["train-cvit"][0], folder / "train-cvit.toml")
    b = 2
    images = torch.randn(b, 3, v.model.img_size, v.model.img_size)
    orders = torch.stack([torch.randperm((v.model.img_size // v.model.patch) ** 2)
                          for _ in range(b)])
    # no download
    skeleton = dataclasses.replace(cvit_mod.RECIPE,
                                   build=lambda cfg, data: cvit_mod.timm_skeleton(cfg))
    seconds, flops = _paper_step(skeleton, v.model, v.train,
                                 cvit_mod.CViTData(images, torch.zeros(b, dtype=torch.long),
                                                                                orders), b, dev,
                                 sync)
    record("train-cvit", v, b, seconds, flops, v.train.steps, v.train.batch_size)
    out["assumption"] = {"h200_bf16_dense_flops": H200_BF16_DENSE, "assumed_mfu": ASSUMED_MFU}
    return out


def print_pretrain(rows: dict) -> None:
    for name, r in rows.items():
        old = r.get("before")
        was = f"{old['images_per_s']:,.0f} (batch {old['batch']}) -> " if old else ""
        best = min(r["batches"], key=lambda b: b["epoch_s"])
        print(f"| {name} training images/s: cpu profile -> pretrain config; cheapest epoch | {was}"
              f"{r['after']['images_per_s']:,.0f} (batch {r['after']['batch']}, "
              f"{r['after']['fraction_of_matmul']:.1%} of matmul); batch {best['batch']}: "
              f"{best['epoch_s']:.0f} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "book" / "results" / "bench.json"))
    ap.add_argument("--skip-paper", action="store_true",
                    help="skip the paper-size step timings (a few minutes on a CPU)")
    ap.add_argument("--skip-compile", action="store_true",
                    help="skip eager vs torch.compile (compiling takes minutes)")
    ap.add_argument("--only-pretrain", action="store_true",
                    help="only the base models' training speed (before / after / batch sizes), "
                         "merged into --out")
    ap.add_argument("--only-masks", action="store_true",
                    help="only CoMAE masks() and the collapse orders (eager, last block in full, "
                         "compiled), merged into --out")
    ap.add_argument("--only-orders", action="store_true",
                    help="only `make orders`: rank all 70,000 images under torchrun, one "
                         "process per core, into a scratch folder, timed (minutes), merged "
                         "into --out")
    args = ap.parse_args()
    if args.only_orders:
        import os
        result = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        result["make_orders"] = bench_make_orders(args.profile, os.cpu_count() or 1)
        atomic_write_json(args.out, result)
        print(json.dumps(result["make_orders"], indent=1))
        return 0
    dev = pick_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if args.only_masks:
        result = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        result["comae_masks"] = bench_masks(args.profile, dev, sync, args.images)
        result["comae_masks"].update(commit=git_commit(ROOT), threads=torch.get_num_threads())
        atomic_write_json(args.out, result)
        print(json.dumps(result["comae_masks"], indent=1))
        return 0
    if args.only_pretrain:
        result = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        result["pretrain"] = bench_pretrain(dev, sync, matmul_flops(dev, sync))
        result["pretrain_commit"] = git_commit(ROOT)
        atomic_write_json(args.out, result)
        print_pretrain(result["pretrain"])
        return 0
    result = {
        "commit": git_commit(ROOT), "device": str(dev), "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "comae_masks": bench_masks(args.profile, dev, sync, args.images),
        "gaussian_entropy": bench_entropy(),
        "pagerank": bench_pagerank(),
        "cvit": bench_cvit(args.profile, dev, max(args.images, 1000)),
    }
    result["comae_training"] = bench_comae_training(args.profile, dev, sync,
                                                    result["comae_masks"]["matmul_gflops"] * 1e9)
    result["step_costs"] = bench_step_costs(args.profile, dev, sync)
    if not args.skip_compile:
        result["compile"] = bench_compile(args.profile, dev, sync)
    if not args.skip_paper:
        result["paper"] = bench_paper(dev, sync)
    result["pretrain"] = bench_pretrain(dev, sync, result["comae_masks"]["matmul_gflops"] * 1e9)
    atomic_write_json(args.out, result)
    m = result["comae_masks"]
    print(f"device {dev} ({result['gpu'] or result['cpu']}, {result['threads']} threads), commit "
          f"{result['commit'][:12]}")
    print("| measurement | value |\n|---|---|")
    print(f"| CoMAE masks(), {args.profile} size: images/s | {m['images_per_s']:.1f} |")
    print(f"| CoMAE masks(): masks (targets)/s | {m['masks_per_s']:.0f} |")
    print(f"| collapse orders end to end (masks + PageRank): images/s | {m['orders_per_s']:.1f} |")
    print(f"| CoMAE masks(): GFLOP per image | {m['gflop_per_image']:.3f} |")
    print(f"| achieved GFLOP/s / large-matmul GFLOP/s | {m['achieved_gflops']:.1f} / "
          f"{m['matmul_gflops']:.1f} = {m['fraction_of_matmul']:.1%} |")
    print(f"| CoMAE masks(), last block in full (before): images/s, share of matmul | "
          f"{m['images_per_s_full_last_block']:.1f}, "
          f"{m['fraction_of_matmul_full_last_block']:.1%} |")
    print(f"| CoMAE masks(compiled=True): images/s, share of matmul | "
          f"{m['images_per_s_compiled']:.1f}, {m['fraction_of_matmul_compiled']:.1%} |")
    print(f"| collapse orders end to end, compiled: images/s | {m['orders_per_s_compiled']:.1f} |")
    print("| CoMAE masks() at 64 images per forward, last block in full: images/s, "
          "share of matmul | "
          f"{m['images_per_s_chunk64']:.1f}, {m['fraction_of_matmul_chunk64']:.1%} |")
    e = result["gaussian_entropy"]
    print(f"| Gaussian model: fit on 60,000 images | {e['fit_60000_s']:.2f} s |")
    print(f"| Gaussian model: greedy order | {e['greedy_order_s']:.2f} s |")
    print(f"| Gaussian model: prefix curves per second | {e['prefix_curves_per_s']:.1f} |")
    for key, r in result["pagerank"].items():
        print(f"| PageRank, {r['graphs']} graphs of N={key[1:]}: copkit batched vs networkx looped "
              f"| {r['copkit_s']:.3f} s vs {r['networkx_s']:.2f} s ({r['speedup']:.0f}x), max "
              f"|diff| {r['max_abs_diff']:.1e} |")
    c = result["cvit"]
    for r, k in c["keep"].items():
        print(f"| CViT classifier ({c['width']}x{c['depth']}), keep {float(r):.0%} ({k['tokens']} "
              f"tokens): images/s, speed-up vs 100% / FLOP ratio | {k['images_per_s']:,.0f}, "
              f"{k['speedup']:.2f}x / {k['flop_ratio']:.2f}x |")
    t = result["comae_training"]
    print(f"| CoMAE training, {args.profile} size ({t['batch_images']} images x "
          f"{t['targets_per_image']} targets): steps/s | {t['steps_per_s']:.1f} |")
    print(f"| CoMAE training: achieved GFLOP/s / large-matmul GFLOP/s | {t['achieved_gflops']:.1f} "
          f"/ {m['matmul_gflops']:.1f} = {t['fraction_of_matmul']:.1%} |")
    for name, r in result["step_costs"].items():
        print(f"| {name} training, {args.profile} size (batch {r['batch']}, {r['precision']}): ms "
              f"per step, ATen ops per step, us per op | {r['ms_per_step']:.1f}, "
              f"{r['ops_per_step']:,.0f}, {r['us_per_op']:.1f} |")
    for name, r in result.get("compile", {}).items():
        print(f"| {name} training, {args.profile} size ({r['precision']}): steps/s eager / "
              f"compiled blocks, compile warm-up | {r['eager']['steps_per_s']:.1f} / "
              f"{r['compiled']['steps_per_s']:.1f} ({r['speedup']:.2f}x), "
              f"{r['compiled']['warmup_s']:.0f} s |")
    for name, r in result.get("paper", {}).items():
        if name == "assumption":
            continue
        what = (f"{r['steps']:,} steps at batch {r['batch']}" if "steps" in r
                else f"{r['images']:,} images")
        print(f"| paper size, {name} ({what}): hours on this device / H200 at {ASSUMED_MFU:.0%} "
              f"MFU | {r['hours_this_device']:,.0f} / {r['h200_hours_at_assumed_mfu']:,.1f} |")
    print_pretrain(result["pretrain"])
    out = Path(args.out)
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
