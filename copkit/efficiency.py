r"""What a model costs: FLOPs counted by torch, operators launched, and time measured in one run.

The paper's efficiency claim (Sec. 5) is a FLOP figure for attention alone; the book counts the
whole forward and times it, so that both sides are measured the same way in the chapters and in
``make bench`` (``tools/bench.py``):

- :func:`count_flops`: the FLOPs of any call, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` with attention through the math kernel (the fused CPU
  kernel counts as zero in torch 2.13-2.14);
- :func:`vit_flops`: one image's forward through a ViT that keeps ``keep`` patch tokens
  (:func:`copkit.cvit.forward_keep`) or through the pruning baseline
  (:class:`copkit.cvit.PrunedViT`);
- :func:`attention_saving`: the paper's figure, :math:`1 - \mathrm{keep}^2`, the attention-matrix
  term only;
- :func:`keep_costs`: per mask ratio, the whole forward's FLOPs, the attention-matrix share and
  the paper's figure side by side; :func:`order_cost`: what the collapse order itself costs;
  :func:`paper_scale_costs`: the same count at the paper's ViT-B scale, on the meta device;
- :class:`OpCount`: the ATen operators a call runs (on a GPU each launches at least one kernel);
- :func:`best_time`: the best of a few timed calls after a warm-up;
- :func:`throughput`: images per second of a ViT at several kept-token counts, interleaved;
- :func:`step_rate`: steps per second of any step function; :func:`train_steps` and
  :func:`train_rate`: training steps exactly as :func:`copkit.train.train` takes them
  (:class:`copkit.step.StepRunner`), and their rate.

Counting conventions: matrix products only, a multiply-add is 2 FLOPs; norms, softmax and
activations are not counted.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .cvit import PrunedViT, forward_keep, n_keep
from .rank import collapse_order
from .recipe import Recipe, TrainConfig
from .step import StepRunner
from .tokens import SIDE

__all__ = ["count_flops", "vit_flops", "attention_saving", "keep_costs", "order_cost",
           "paper_scale_costs", "OpCount", "best_time", "throughput", "step_rate", "train_steps",
           "train_rate"]


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """The FLOPs of ``fn(*args, **kwargs)`` (forward, and backward if ``fn`` runs one), counted by
    ``FlopCounterMode`` with scaled-dot-product attention through the math kernel, so that the
    attention products are counted.

    >>> count_flops(torch.matmul, torch.ones(2, 3), torch.ones(3, 4))  # 2 * 2 * 3 * 4
    48
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def vit_flops(model: nn.Module, keep: int | None = None, in_chans: int = 1,
              img_size: int = SIDE) -> int:
    """FLOPs of one image's whole forward with ``keep`` patch tokens (None: all): the first
    ``keep`` patches through :func:`copkit.cvit.forward_keep` for a timm ViT (which tokens does not
    change the count), or the pruner's own choice for a :class:`copkit.cvit.PrunedViT`. Counted in
    eval mode without gradients, on the model's device (the meta device counts without
    computing)."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, img_size, img_size, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if isinstance(model, PrunedViT):
            flops = count_flops(model, x, n_keep=keep)
        else:
            n = model.patch_embed.num_patches
            flops = count_flops(forward_keep, model, x,
                                None if keep is None or keep == n
                                else torch.arange(keep, device=device))
    model.train(was_training)
    return flops


def attention_saving(keep_fraction: float) -> float:
    r"""The paper's efficiency figure (Sec. 5): attention cost falls with the square of the tokens
    kept, :math:`1 - \mathrm{keep}^2` (95.16% at keep 0.22). Only the attention-matrix term scales
    this way."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must be in [0, 1], got {keep_fraction}")
    return 1.0 - keep_fraction**2


@torch.no_grad()
def throughput(model: nn.Module, keeps: Sequence[int], images: Tensor, repeat: int = 5,
               rounds: int = 3) -> dict[int, float]:
    """Images per second of ``forward_keep`` at each patch count in ``keeps`` (the speed behind
    Sec. 5's efficiency claim), measured in one run: ``rounds`` interleaved rounds (so load on
    the machine hits every setting alike), each the best of ``repeat`` timed passes over
    ``images``; the best round per setting is returned."""
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = images.to(device)
    was_training = model.training
    model.eval()
    best = {k: 0.0 for k in keeps}
    for _ in range(rounds):
        for k in keeps:
            keep = None if k >= model.patch_embed.num_patches else torch.arange(k, device=device)
            forward_keep(model, images, keep)  # warm-up
            sync()
            for _ in range(repeat):
                t = time.perf_counter()
                forward_keep(model, images, keep)
                sync()
                best[k] = max(best[k], images.shape[0] / (time.perf_counter() - t))
    model.train(was_training)
    return best




class OpCount(TorchDispatchMode):
    """Counts the ATen operators run under it (``with OpCount() as c: ...; c.ops``); on a GPU each
    launches at least one kernel, so a small model's step costs its operators more than its
    FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def best_time(fn: Callable[[], Any], repeat: int = 3,
              sync: Callable[[], None] = lambda: None) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn()``, after one untimed warm-up call;
    ``sync`` waits for the device (``torch.cuda.synchronize`` on a GPU)."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def step_rate(step: Callable[[int], Any], steps: int, first: int = 0, warmup: int = 1,
              sync: Callable[[], None] = lambda: None) -> float:
    """Steps per second of ``step(t)`` for t = ``first + warmup`` .. ``first + warmup + steps - 1``,
    after ``warmup`` untimed steps (which pay one-off costs: threads, kernels, compiling)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for t in range(first, first + warmup):
        step(t)
    sync()
    t0 = time.perf_counter()
    for t in range(first + warmup, first + warmup + steps):
        step(t)
    sync()
    return steps / (time.perf_counter() - t0)


def keep_costs(model: nn.Module, ratios: Sequence[float], pruned: nn.Module | None = None,
               in_chans: int = 1, img_size: int = SIDE) -> dict[str, dict[str, float]]:
    r"""What keeping the top of the order saves, per mask ratio (Sec. 5's claim, counted whole).

    For each ratio r (keys ``f"{r:.2f}"``), with k = :func:`copkit.cvit.n_keep` (r) patches kept:
    ``kept``; ``flops`` of one image's whole forward (:func:`vit_flops`) and ``ratio_to_full``
    against all patches; ``attention_share``, the share of those FLOPs in the attention matrix
    (:math:`4 T^2 d` per block for :math:`T = k + 1` tokens with the class token, :math:`d` the
    width: the two products :math:`q k^\top` and :math:`\mathrm{attn}\,v`);
    ``paper_attention_saving``, the paper's :math:`1 - \mathrm{keep}^2`; and, given a
    ``pruned`` model (:class:`copkit.cvit.PrunedViT`), its ``pruned_flops`` at the same final count.
    """
    n = model.patch_embed.num_patches
    width, depth = model.embed_dim, len(model.blocks)
    full = vit_flops(model, None, in_chans, img_size)
    out = {}
    for r in ratios:
        k = n_keep(float(r), n)
        f = vit_flops(model, k, in_chans, img_size)
        row = {"kept": k, "flops": f, "ratio_to_full": f / full,
               "attention_share": depth * 4 * (k + 1) ** 2 * width / f,
               "paper_attention_saving": attention_saving(k / n)}
        if pruned is not None:
            row["pruned_flops"] = vit_flops(pruned, k, in_chans, img_size)
        out[f"{float(r):.2f}"] = row
    return out


@torch.no_grad()
def order_cost(comae: nn.Module, tokens: Tensor, count: int = 4) -> tuple[float, float]:
    """What the collapse order of one image costs: (FLOPs per image, images per second), for
    CoMAE's masks of every target (one selector pass per target) and PageRank
    (:func:`copkit.rank.collapse_order`) over ``tokens`` (B, N, d); FLOPs counted on the first
    ``count`` images in float32 (the count ignores PageRank's few small products)."""
    flops = count_flops(comae.masks, tokens[:count]) / min(count, len(tokens))
    seconds = best_time(lambda: collapse_order(comae.masks(tokens)), repeat=1)
    return flops, len(tokens) / seconds


def paper_scale_costs(widths: Sequence[int] = (64, 256), keep: int = 56, img_size: int = 256,
                      patch: int = 16) -> dict[str, float]:
    """The end-to-end count at the paper's scale, on the meta device (no memory, no compute):
    ViT-B/16 on a 256 px image (256 patches), all patches and ``keep`` of them (56: 22%), against
    the collapse order computed by CoMAE's selector, taken as a 12-block timm encoder of each
    width over the same patches, run once per target (256 passes per image). GFLOP per image:
    ``vit_b_gflop_full``, ``vit_b_gflop_keep{keep}``, and per width ``order_gflop_width{w}`` and
    ``end_to_end_ratio_width{w}`` (order + ViT-B at ``keep``, over ViT-B on all patches). The
    tokenizer that makes CoMAE's input is not counted."""
    n = (img_size // patch) ** 2
    with torch.device("meta"):
        vit_b = VisionTransformer(img_size=img_size, patch_size=patch, embed_dim=768, depth=12,
                                  num_heads=12)
        encoders = {w: VisionTransformer(img_size=img_size, patch_size=patch, embed_dim=w, depth=12,
                                         num_heads=max(1, w // 64)) for w in widths}
    full, kept = vit_flops(vit_b, None, 3, img_size), vit_flops(vit_b, keep, 3, img_size)
    out = {"vit_b_gflop_full": full / 1e9, f"vit_b_gflop_keep{keep}": kept / 1e9}
    for w, enc in encoders.items():
        order = n * vit_flops(enc, None, 3, img_size)
        out[f"order_gflop_width{w}"] = order / 1e9
        out[f"end_to_end_ratio_width{w}"] = (order + kept) / full
    return out


def train_steps(runner: StepRunner, first: int, n: int) -> None:
    """Training steps ``first`` .. ``first + n - 1`` taken by ``runner``
    (:class:`copkit.step.StepRunner`): exactly the steps :func:`copkit.train.train` takes, the
    learning-rate schedule, the forward under the configured precision, clipping, the update and
    the EMA included, without the loop's finite-loss check, logging and checkpoints. What a step
    costs, for timing and counting."""
    for t in range(first, first + n):
        runner(t)


def train_rate(recipe: Recipe, model_cfg: Any, train_cfg: TrainConfig, data: Any, steps: int = 5,
               warmup: int = 1, device: torch.device | str = "cpu",
               sync: Callable[[], None] = lambda: None) -> float:
    """Training steps per second of a fresh model of ``recipe`` (configuration ``model_cfg``) on
    ``data``, made as :func:`copkit.train.fit` makes it (:meth:`copkit.recipe.Recipe.setup`) and
    stepped as it trains it (:class:`copkit.step.StepRunner`): ``warmup`` untimed steps, then
    ``steps`` timed ones (:func:`step_rate`). Multiply by ``train_cfg.batch_size`` for images per
    second."""
    runner = StepRunner.of(recipe.setup(model_cfg, train_cfg, data, device), train_cfg, device)
    return step_rate(runner, steps, warmup=warmup, sync=sync)
