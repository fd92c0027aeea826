r"""MAR and CMAR: masked autoregressive generation of continuous tokens with a per-token diffusion
head, in a random order (MAR, Li et al. 2024) or in the collapse order (CMAR, the paper's Sec. 3.3).

A small MAR that keeps what makes MAR what it is (the conventions of MAR's official code,
https://github.com/LTH14/mar):

- **orders** are per image, a (B, N) long tensor. MAR's convention, kept here: the *first* entries
  of the order are masked, so the *tail* is what the model sees in training and what it generates
  first. A collapse order (best patch first, :func:`copkit.rank.collapse_order`) therefore enters
  CMAR reversed (:func:`mar_order`): its best patches sit at the tail.
- **training** (:meth:`MAR.loss`): one mask ratio per batch from a truncated normal on
  [``mask_ratio_min``, 1] (mode 1, scale 0.25); the first :math:`\lceil N r \rceil` entries of
  each order are masked; an MAE-style encoder sees the class-embedding buffer and the visible
  tokens, a decoder adds mask tokens; 10% of labels are replaced by a learned fake class (for
  CFG); the diffusion loss is taken on masked tokens only, each repeated ``diffusion_batch_mul``
  times with fresh noise.
- **DiffLoss** (:class:`copkit.diffloss.DiffLoss`): an AdaLN residual MLP per token conditioned on
  the decoder output, a cosine noise schedule over 1000 steps (:mod:`copkit.diffusion`), epsilon
  prediction.
- **generation** (:meth:`MAR.sample`): MAR's cosine schedule over :math:`S` steps (after step
  :math:`s`, :math:`\lfloor N \cos(\tfrac{\pi}{2} \tfrac{s+1}{S}) \rfloor` tokens stay masked, at
  least one is revealed per step), a linear CFG schedule :math:`1 + (w - 1)(N - m)/N` for the
  guidance scale :math:`w` (``cfg_scale``) and MAR's ``mask_len`` :math:`m` (the tokens left
  masked after the step, at least 1: the last step, which reveals all, is guided with
  :math:`1 + (w - 1)(N - 1)/N`, never the full scale), DDPM sampling respaced to a few steps,
  temperature on the per-step noise. CMAR's order at generation time is an argument: any (B, N)
  order, or an ``adapt`` callback that re-orders the still-hidden patches after every step.

Departures from the official code, on purpose and stated in Chapter 4: pixel tokens (4x4 patches of
28x28 Fashion-MNIST, d = 16) instead of KL-16 VAE latents; the diffusion head predicts epsilon with
a fixed variance (the posterior variance) instead of also learning it with the VLB term; the
predicted clean token is clipped to the pixel range [-1, 1] when sampling. MAR's own head is one
setting away (``time_freq=256, learn_sigma=True, clip_x0=False``): the paper's configs and the
weights converted from MAR's released checkpoints (:mod:`copkit.mar_weights`) use it.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from tqdm import tqdm

from .diffloss import DiffLoss
from .dist import Shard
from .dist import shard as process_shard
from .io import bars_off
from .profiles import BaseSizes, CmarSizes
from .rank import class_mean_order, collapse_order, fixed_order, ranks
from .recipe import Recipe, TrainConfig, batch_indices, host_generator, take
from .tokens import (
    GRID,
    N_TOKENS,
    PATCH,
    SIDE,
    centre_out_order,
    flip_batch,
    gather_tokens,
    patchify,
    random_orders,
    unpatchify,
)

__all__ = [
    "MARConfig",
    "MAR",
    "sample_mask_ratio",
    "masked_count",
    "masked_count_after",
    "reveal_schedule",
    "cfg_schedule",
    "mar_order",
    "one_order",
    "ONE_ORDER_KINDS",
    "draw_given",
    "mix_orders",
    "adaptive_collapse",
    "ORDER_KINDS",
    "ORDER_SOURCES",
    "training_orders",
    "mar_step_fn",
    "MARData",
    "RECIPE",
    "PHASES",
    "from_profile",
    "fashion_mnist_data",
    "generation_orders",
    "generate",
    "image_generators",
    "hidden_uncertainty",
]


# ----------------------------------------------------------------------------------- orders
def mar_order(collapse: Tensor, descending: bool = True) -> Tensor:
    """A collapse order (best patch first) as a MAR order (Sec. 3.3).

    MAR masks the head of its order and generates the tail first. CMAR generates the
    highest-ranked patches first (``descending``), so the collapse order is reversed; the ablation
    (``descending=False``, Table 4's "ascending") generates the lowest-ranked first.

    >>> mar_order(torch.tensor([[2, 0, 1]]))
    tensor([[1, 0, 2]])
    """
    return collapse.flip(-1) if descending else collapse.clone()


def mix_orders(orders: Tensor, random_fraction: float,
               generator: torch.Generator | None = None) -> Tensor:
    """CMAR's regularisation (Sec. 3.3): each sequence keeps its order, or with probability
    ``random_fraction`` (the paper's 10%) gets a random one."""
    b, n = orders.shape
    swap = torch.rand(b, generator=generator, device=orders.device) < random_fraction
    rnd = random_orders(b, n, generator=generator).to(orders.device)
    return torch.where(swap[:, None], rnd, orders)


# ----------------------------------------------------------------------------- schedules
def sample_mask_ratio(generator: torch.Generator | None = None, minimum: float = 0.7,
                      mode: float = 1.0, scale: float = 0.25) -> float:
    """MAR's training mask ratio: a normal with mean ``mode`` and sd ``scale`` truncated to
    [``minimum``, 1] (inverse-CDF sampling). MAR uses minimum 0.7, mode 1, scale 0.25."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lo, hi = normal.cdf(torch.tensor((minimum - mode)
                                     / scale)), normal.cdf(torch.tensor((1.0 - mode) / scale))
    u = torch.rand((), generator=generator,
                   device=generator.device if generator is not None else "cpu").cpu()
    return float((mode + scale * normal.icdf(lo + u * (hi - lo))).clamp(minimum, 1.0))


def masked_count(n_tokens: int, mask_ratio: float) -> int:
    r"""How many of :math:`N` = ``n_tokens`` a training step at mask ratio :math:`r` =
    ``mask_ratio`` hides: :math:`\lceil N r \rceil`, at least one and at most all
    (:meth:`MAR.loss`); the rest, the tail of the order, is what the model sees.

    >>> masked_count(49, 0.78), 49 - masked_count(49, 0.78), masked_count(49, 0.0)
    (39, 10, 1)
    """
    if n_tokens < 1 or not 0 <= mask_ratio <= 1:
        raise ValueError(f"need n_tokens >= 1 and a mask ratio in [0, 1], got {n_tokens} and "
                         f"{mask_ratio}")
    return min(n_tokens, max(1, math.ceil(n_tokens * mask_ratio)))


def masked_count_after(step: int, steps: int, n_tokens: int, masked_now: int) -> int:
    r"""How many tokens stay masked after generation step :math:`s` = ``step`` of :math:`S` =
    ``steps`` (MAR's cosine schedule):
    :math:`\lfloor N \cos(\tfrac{\pi}{2} \tfrac{s+1}{S}) \rfloor`, clamped so that every step
    reveals at least one token and, before the last step, leaves at least one masked. The last step
    reveals all."""
    if step >= steps - 1:
        return 0
    m = math.floor(n_tokens * math.cos(math.pi / 2 * (step + 1) / steps))
    return max(1, min(masked_now - 1, m))


def reveal_schedule(n_tokens: int, steps: int) -> list[int]:
    """Tokens revealed at each of the ``steps`` generation steps (sums to N, never 0).

    >>> reveal_schedule(49, 8)
    [1, 3, 5, 6, 7, 9, 9, 9]
    """
    if not 1 <= steps <= n_tokens:
        raise ValueError(f"steps must be between 1 and the number of tokens ({n_tokens}); got "
                         f"{steps}")
    masked, out = n_tokens, []
    for s in range(steps):
        nxt = masked_count_after(s, steps, n_tokens, masked)
        out.append(masked - nxt)
        masked = nxt
    return out


def cfg_schedule(cfg_scale: float, masked: int, n_tokens: int, kind: str = "linear") -> float:
    r"""MAR's guidance scale at a step after which :math:`m` = ``masked`` tokens stay hidden:
    ``linear`` grows with the revealed tokens, :math:`1 + (w - 1)(N - m)/N` for the full scale
    :math:`w` = ``cfg_scale``; ``constant`` is ``cfg_scale``.

    MAR's ``sample_tokens`` passes its ``mask_len``, the count its next step keeps masked, which is
    clamped to at least 1 even on the last step (where every token is revealed all the same), so
    MAR never guides with the full ``cfg_scale``: its last step uses
    :math:`1 + (w - 1)(N - 1)/N`.
    :meth:`MAR.sample` passes ``max(masked_count_after(...), 1)``, which is that ``mask_len``."""
    if kind == "linear":
        return 1.0 + (cfg_scale - 1.0) * (n_tokens - masked) / n_tokens
    if kind == "constant":
        return cfg_scale
    raise ValueError(f"unknown CFG schedule {kind!r}; use 'linear' or 'constant'")


# ----------------------------------------------------------------------------------- MAR
@dataclass(frozen=True)
class MARConfig:
    """A small MAR on a grid of pixel tokens (MAR-B: width 768, 12 + 12 blocks, buffer 64)."""

    grid: tuple[int, int] = (GRID, GRID)
    token_dim: int = 16
    n_classes: int = 10
    width: int = 128
    enc_depth: int = 3
    dec_depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    buffer: int = 4  #: class-embedding slots in front of the tokens, never masked
    head_width: int = 128
    head_depth: int = 2
    diffusion_steps: int = 1000
    diffusion_batch_mul: int = 4
    mask_ratio_min: float = 0.7
    label_drop: float = 0.1
    dropout: float = 0.0
    # MAR's own head (its released checkpoints): a 256-frequency timestep embedding, a learned
    # variance, and no clipping of the predicted clean token (VAE latents are not bounded).
    time_freq: int | None = field(default=None, metadata={"hash_if_set": True})  #: None: head_width
    learn_sigma: bool = field(default=False, metadata={"hash_if_set": True})
    #: clip x0 to [-1, 1] when sampling
    clip_x0: bool = field(default=True, metadata={"hash_if_set": True})

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class MAR(nn.Module):
    """MAR's bidirectional encoder-decoder (timm ``Block`` modules) with a class-embedding buffer, a
    learned fake class for CFG, and the per-token :class:`~copkit.diffloss.DiffLoss` head.

    Every LayerNorm has eps 1e-6: the blocks get ``norm_layer=partial(nn.LayerNorm, eps=1e-6)`` as
    MAR's ``mar_base`` / ``mar_large`` / ``mar_huge`` pass it (timm's default differs across
    versions)."""

    def __init__(self, cfg: MARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, w = cfg.n_tokens, cfg.width
        self.class_emb = nn.Embedding(cfg.n_classes, w)
        self.fake_latent = nn.Parameter(torch.zeros(1, w))
        self.z_proj = nn.Linear(cfg.token_dim, w)
        self.z_proj_ln = nn.LayerNorm(w, eps=1e-6)
        self.enc_pos = nn.Parameter(torch.zeros(1, cfg.buffer + n, w))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.encoder = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio, qkv_bias=True,
                                           norm_layer=norm, proj_drop=cfg.dropout,
                                           attn_drop=cfg.dropout) for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(w, eps=1e-6)
        self.dec_embed = nn.Linear(w, w)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.dec_pos = nn.Parameter(torch.zeros(1, cfg.buffer + n, w))
        self.decoder = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio, qkv_bias=True,
                                           norm_layer=norm, proj_drop=cfg.dropout,
                                           attn_drop=cfg.dropout) for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(w, eps=1e-6)
        self.diff_pos = nn.Parameter(torch.zeros(1, n, w))
        self.diffloss = DiffLoss(cfg.token_dim, w, cfg.head_width, cfg.head_depth,
                                 cfg.diffusion_steps, cfg.time_freq, cfg.learn_sigma)
        for p in (self.class_emb.weight, self.fake_latent, self.mask_token, self.enc_pos,
                  self.dec_pos, self.diff_pos):
            nn.init.normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Matrices AdamW does not decay (:func:`copkit.recipe.weight_decay_groups`), as MAR trains
        (its ``misc.add_weight_decay``: every parameter of the diffusion head, and outside it every
        1-D parameter and bias). The class embedding, the fake latent, the mask token and the
        position embeddings are decayed."""
        return {n for n, _ in self.named_parameters() if n.startswith("diffloss.")}

    def condition(self, labels: Tensor, drop: Tensor | None = None) -> Tensor:
        """The class embedding, or the fake latent where ``drop`` is true (B,) -> (B, w)."""
        c = self.class_emb(labels)
        if drop is not None:
            c = torch.where(drop[:, None], self.fake_latent.expand_as(c), c)
        return c

    def forward_z(self, tokens: Tensor, cond: Tensor, visible: Tensor) -> Tensor:
        """Decoder outputs z (B, N, w) for every position, from the tokens at the ``visible``
        positions (B, V) (the same count per image) and the condition (B, w) in the buffer."""
        b, n, _ = tokens.shape
        nb, w = self.cfg.buffer, self.cfg.width
        buf = cond[:, None].expand(b, nb, w) + self.enc_pos[:, :nb]
        idx = visible[..., None].expand(-1, -1, w)
        x = self.z_proj(gather_tokens(tokens, visible))
        x = x + gather_tokens(self.enc_pos[:, nb:].expand(b, n, w), visible)
        x = torch.cat([buf, x], dim=1)
        x = self.z_proj_ln(x)
        for blk in self.encoder:
            x = blk(x)
        x = self.dec_embed(self.enc_norm(x))
        # Under autocast x is half precision, the mask token float32; scatter wants one dtype.
        full = self.mask_token.expand(b, n, w).to(x.dtype).scatter(1, idx, x[:, nb:])
        y = torch.cat([x[:, :nb], full], dim=1) + self.dec_pos
        for blk in self.decoder:
            y = blk(y)
        return self.dec_norm(y)[:, nb:] + self.diff_pos

    def loss(self, tokens: Tensor, labels: Tensor, orders: Tensor,
             generator: torch.Generator | None = None, mask_ratio: float | None = None,
             shard: Shard | None = None) -> Tensor:
        """MAR's training loss on a batch: tokens (B, N, d), labels (B,), orders (B, N) in MAR's
        convention (the head is masked). ``mask_ratio`` defaults to a draw of
        :func:`sample_mask_ratio` from [``mask_ratio_min``, 1], one per (global) batch.

        With a ``shard`` (:class:`copkit.dist.Shard`) the inputs are this process's rows of a
        global batch; the label drops, the timesteps and the noise are drawn for the whole global
        batch and cut, as one process would draw them."""
        b, n, d = tokens.shape
        shard = shard or Shard.whole(b)
        if orders.shape != (b, n) or shard.size != b:
            raise ValueError(f"orders must be (batch, tokens) = {(b, n)} and the shard {b} rows; "
                             f"got {tuple(orders.shape)} and {shard.size}")
        if mask_ratio is None:
            mask_ratio = sample_mask_ratio(host_generator(generator), self.cfg.mask_ratio_min)
        m = masked_count(n, mask_ratio)
        masked, visible = orders[:, :m], orders[:, m:]
        drop = (shard.cut(torch.rand(shard.total, generator=generator,
                                     device=tokens.device)) < self.cfg.label_drop)
        z = self.forward_z(tokens, self.condition(labels, drop), visible)
        k = self.cfg.diffusion_batch_mul
        zm = gather_tokens(z, masked).reshape(b * m, -1)
        xm = gather_tokens(tokens, masked).reshape(b * m, -1)
        # rows are (copy j, image i, masked token t): drawn for every image of the global batch
        t = torch.randint(0, self.diffloss.diffusion.steps, (k, shard.total, m),
                          generator=generator, device=tokens.device)
        noise = torch.randn((k, shard.total, m, d), generator=generator, device=tokens.device,
                            dtype=tokens.dtype)
        t, noise = t[:,
                     shard.start:shard.stop].reshape(-1), noise[:,
                                                                shard.start:shard.stop].reshape(-1,
                                                                                                d)
        return self.diffloss(xm.repeat(k, 1), zm.repeat(k, 1), generator, t=t, noise=noise).mean()

    @torch.no_grad()
    def sample(self, labels: Tensor, orders: Tensor, steps: int = 16, cfg_scale: float = 1.0,
               cfg_kind: str = "linear", temperature: float = 1.0, diffusion_steps: int = 100,
               generator: torch.Generator | Sequence[torch.Generator] | None = None,
               adapt: Callable[[Tensor, Tensor, int], Tensor] | None = None, draft_steps: int = 10,
               callback: Callable[[int, Tensor, Tensor, int], None] | None = None) -> Tensor:
        """Generate tokens (B, N, d) for ``labels`` along ``orders`` (MAR's convention: the tail is
        generated first).

        After step s exactly the last ``N - masked(s)`` entries of the order are revealed
        (:func:`masked_count_after`). ``cfg_scale`` != 1 guides with the fake class on a doubled
        batch, the scale following ``cfg_kind`` (:func:`cfg_schedule` with MAR's ``mask_len``, at
        least 1).

        ``adapt(canvas, orders, masked)``, when given, is asked before every step for new orders:
        the canvas holds the revealed tokens and a quick draft (``draft_steps`` diffusion steps) of
        the hidden ones, and the callback may reorder only the hidden head ``orders[:, :masked]``
        (:func:`adaptive_collapse` re-ranks it with CoMAE). ``callback(step, tokens, orders,
        masked)`` sees the state after every step.

        ``generator`` is one generator for the batch, or one per image (:func:`image_generators`):
        then every random draw of an image comes from its own generator, so the image does not
        depend on the rest of the batch.
        """
        b, n = orders.shape
        d = self.cfg.token_dim
        tokens = torch.zeros(b, n, d, device=orders.device)
        cond = self.condition(labels)
        uncond = self.fake_latent.expand_as(cond)
        guided = cfg_scale != 1.0
        clip = 1.0 if self.cfg.clip_x0 else None

        def pick(t: Tensor, index: Tensor) -> Tensor:
            return gather_tokens(t, index).reshape(-1, t.shape[-1])

        per_image = isinstance(generator, (list, tuple))
        shared = None if per_image else generator

        def noise(k: int, diffusion: int) -> dict:
            """The head's noise for k new tokens of each image, image by image from its generator
            (as keywords: none with one shared generator, which the head draws from itself)."""
            if not per_image:
                return {}
            t = self.diffloss.noise_draws(diffusion)
            return {"noise": torch.stack([torch.randn(t, k, d, generator=g, device=orders.device)
                                          for g in generator],
                                         1).reshape(t, b * k, d)}

        masked = n
        for s in range(steps):
            nxt = masked_count_after(s, steps, n, masked)
            visible = orders[:, masked:]
            if guided:
                z, zu = self.forward_z(torch.cat([tokens, tokens]), torch.cat([cond, uncond]),
                                       torch.cat([visible, visible])).chunk(2)
            else:
                z, zu = self.forward_z(tokens, cond, visible), None
            # MAR's mask_len: what stays masked after this step, at least 1 (on the last step too)
            scale = cfg_schedule(cfg_scale, max(nxt, 1), n, cfg_kind) if guided else 1.0
            if adapt is not None and masked > 1:
                hidden = orders[:, :masked]
                draft = self.diffloss.sample(pick(z, hidden), draft_steps, temperature, scale,
                                             pick(zu, hidden) if guided else None, shared, clip,
                                             **noise(masked, draft_steps))
                canvas = tokens.scatter(1, hidden[..., None].expand(-1, -1, d),
                                        draft.reshape(b, masked, d))
                orders = adapt(canvas, orders, masked)
                if not torch.equal(orders[:, masked:], visible):
                    raise ValueError("adapt must keep the revealed tail of the orders in place")
            new = orders[:, nxt:masked]  # revealed at this step
            out = self.diffloss.sample(pick(z, new), diffusion_steps, temperature, scale,
                                       pick(zu, new) if guided else None, shared, clip,
                                       **noise(masked - nxt, diffusion_steps))
            tokens = tokens.scatter(1, new[..., None].expand(-1, -1, d),
                                    out.reshape(b, masked - nxt, d))
            masked = nxt
            if callback is not None:
                callback(s, tokens, orders, masked)
        return tokens


def adaptive_collapse(comae: nn.Module,
                      damping: float = 0.85) -> Callable[[Tensor, Tensor, int], Tensor]:
    """CMAR's order decided while generating (option (c) of Chapter 4): before each step CoMAE
    ranks the patches of the current canvas (revealed tokens plus a draft of the hidden ones) with
    PageRank, and the hidden head of the MAR order is sorted so that the best-ranked hidden patch
    sits at its end, i.e. is revealed next. The revealed tail is left as it is."""
    def adapt(canvas: Tensor, orders: Tensor, masked: int) -> Tensor:
        r = ranks(collapse_order(comae.masks(canvas), damping=damping))  # 0 = best
        hidden = orders[:, :masked]
        worst_first = torch.gather(r, 1, hidden).argsort(dim=1, descending=True)
        return torch.cat([torch.gather(hidden, 1, worst_first), orders[:, masked:]], dim=1)

    return adapt


# ------------------------------------------------------------------------ training (copkit.train)
ORDER_KINDS = ("random", "descending", "ascending")
#: Training on one order for every image, generated best patch first (MARData's ``kind``): ``fixed``
#: is the training images' mean-rank order (:func:`copkit.rank.fixed_order`), ``centre-out`` the
#: patches nearest the image centre first (:func:`copkit.tokens.centre_out_order`), which knows
#: nothing of the data. The controls for whether CMAR gains from each image's own order.
ONE_ORDER_KINDS = ("fixed", "centre-out")


def training_orders(kind: str, collapse: Tensor | None, batch: int, n_tokens: int,
                    random_fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """The MAR orders of one training batch: ``random`` (MAR), or the images' collapse orders
    ``descending`` (CMAR: best patches generated first) or ``ascending`` (Table 4's ablation), a
    ``random_fraction`` of the sequences replaced by random orders (CMAR's 10%)."""
    if kind == "random":
        return random_orders(batch, n_tokens, generator=generator)
    if kind not in ORDER_KINDS:
        raise ValueError(f"unknown order kind {kind!r}; use one of {ORDER_KINDS} (for "
                         f"{ONE_ORDER_KINDS}, see mar_step_fn)")
    if collapse is None:
        raise ValueError(f"order kind {kind!r} needs the images' collapse orders")
    return mix_orders(mar_order(collapse, descending=kind == "descending"), random_fraction,
                      generator)


def one_order(kind: str, collapse: Tensor | None, grid: tuple[int, int]) -> Tensor:
    """The single collapse order (N,) of a :data:`ONE_ORDER_KINDS` training: ``fixed`` from the
    training images' collapse orders ``collapse`` (n, N), ``centre-out`` from the ``grid`` alone.

    >>> one_order("centre-out", None, (3, 3))[0].item()
    4
    """
    if kind == "centre-out":
        return centre_out_order(grid)
    if kind != "fixed":
        raise ValueError(f"unknown single-order kind {kind!r}; use one of {ONE_ORDER_KINDS}")
    if collapse is None:
        raise ValueError("the fixed order is the training images' mean ranks: it needs their "
                         "collapse orders")
    return fixed_order(collapse)


def mar_step_fn(model: MAR, images: Tensor, labels: Tensor, batch_size: int, seed: int,
                kind: str = "random", collapse: Tensor | None = None, random_fraction: float = 0.1,
                flip: bool = True, tokenizer: Callable[..., Tensor] | None = None,
                stride: int = PATCH):
    """One training step of MAR / CMAR for :func:`copkit.train.train`: a batch of images (n, C, H,
    W), a random horizontal flip with the collapse orders flipped alongside, tokens (pixel patches
    p = 4 unless a ``tokenizer`` with token ``stride`` in pixels is given), the batch's orders
    (:func:`training_orders`) and :meth:`MAR.loss`.

    ``tokenizer(images, generator, shard)`` -> (B, N, d) is a :class:`copkit.tokenizer.Tokenizer`'s
    ``encode``, given the step's generator and this process's shard: the KL-16 VAE draws its tokens
    from its posterior with them, as MAR trains, and training stays deterministic and resumable.

    ``images`` is anything indexed by a tensor of indices (a tensor, or images read from disk:
    :class:`copkit.imagefolder.ImageFolderImages`). Under torchrun each process reads and computes
    only its :func:`copkit.dist.shard` of the batch; every draw is made for the global batch."""
    device = next(model.parameters()).device
    encode = tokenizer or (lambda x, generator=None, shard=None: patchify(x, PATCH))
    part = process_shard(batch_size)
    if kind in ONE_ORDER_KINDS:
        collapse = one_order(kind, collapse, model.cfg.grid).expand(len(images), -1)
        kind = "descending"

    def step_fn(step: int, gen: torch.Generator):
        idx = part.cut(batch_indices(len(images), batch_size, step, seed))
        x, y = take(images, idx, device), take(labels, idx, device)
        o = take(collapse, idx, device) if collapse is not None else None
        flips = None
        if flip:
            flips = part.cut(torch.rand(part.total, generator=gen, device=gen.device) < 0.5)
            x, o = flip_batch(x, o, flips, stride)
        orders = part.cut(training_orders(kind, _global(o, part), part.total, model.cfg.n_tokens,
                                          random_fraction, gen))
        loss = model.loss(encode(x, gen, part), y, orders, gen, shard=part)
        return loss, "mar", {}

    return step_fn


def _global(rows: Tensor | None, part) -> Tensor | None:
    """This process's rows placed in a global-batch tensor (zeros elsewhere): what
    :func:`training_orders` needs to draw its random choices for the whole batch."""
    if rows is None or part.size == part.total:
        return rows
    out = rows.new_zeros((part.total, *rows.shape[1:]))
    out[part.start:part.stop] = rows
    return out


@dataclass(frozen=True, eq=False)
class MARData:
    """What a MAR / CMAR trains on (:data:`RECIPE`): images (n, C, H, W) and labels (n,), anything
    indexed by a tensor of indices; the order ``kind`` (``"random"``: MAR; ``"descending"``: CMAR;
    ``"ascending"``: Table 4's ablation; ``"fixed"`` and ``"centre-out"``: one order for every
    image, :data:`ONE_ORDER_KINDS`) with the images' collapse orders (n, N) and CMAR's
    ``random_fraction``; ``tokenizer`` (a :class:`copkit.tokenizer.Tokenizer`'s ``encode``,
    :func:`mar_step_fn`) and its token ``stride`` in pixels (None: pixel patches, p = 4). ``kind``
    and ``random_fraction`` are part of the run's hash."""

    images: Any
    labels: Tensor
    kind: str = "random"
    collapse: Tensor | None = None
    random_fraction: float = 0.1
    tokenizer: Callable[..., Tensor] | None = None
    stride: int = PATCH


def _step(model: MAR, model_cfg: MARConfig, train_cfg: TrainConfig, data: MARData):
    return mar_step_fn(model, data.images, data.labels, train_cfg.batch_size, train_cfg.seed,
                       data.kind, data.collapse, data.random_fraction, tokenizer=data.tokenizer,
                       stride=data.stride)


#: How :func:`copkit.train.fit` trains MAR and CMAR (:func:`mar_step_fn`, one optimiser "mar"), from
#: scratch or fine-tuned (``fit(..., init=(run hash, state dict))``); runs in
#: ``<data_dir>/runs/mar-<hash8>``, named also by the order kind, the random fraction of the
#: collapse kinds and the run fine-tuned from.
#:
#: :meta hide-value:
RECIPE = Recipe(name="mar", module="mar", build=lambda cfg, data: MAR(cfg), step=_step,
                hashed=lambda data: {"orders": data.kind, "init": None,
                                     "random_fraction": data.random_fraction
                                     if data.kind != "random" else None})


def fashion_mnist_data(images: int, orders_comae: str | None, patch: int = PATCH) -> dict:
    """The data description (part of every run's hash) of MAR / CMAR trained on the first
    ``images`` Fashion-MNIST training images in ``patch`` x ``patch`` pixel tokens, with the
    collapse orders of the CoMAE whose hash is ``orders_comae``: Chapter 4's, and ``train-cmar``'s
    on the same data. The orders' CoMAE is named for every order kind, the random-order control
    included, so that the three fine-tunes of one seed are named by the same data."""
    return {"dataset": "fashion-mnist", "split": "train", "images": images, "patch": patch,
            "orders_by_comae": orders_comae}


#: The MAR trainings of a profile (:func:`from_profile`), MAR from scratch, MAR -> CMAR fine-tuning,
#: CMAR from scratch (MAR's recipe with ``scratch_steps``).
PHASES = ("mar", "finetune", "scratch")


def from_profile(sizes: CmarSizes | BaseSizes, seed: int, *,
                 phase: str = "mar") -> tuple[MARConfig, TrainConfig]:
    """The MAR configuration and the training configuration of one ``phase`` (:data:`PHASES`) of a
    profile's :class:`copkit.profiles.CmarSizes`, for one seed. Every chapter and
    ``python -m copkit config train-cmar`` take them from here.

    With the ``mar`` section of the pretraining config (:class:`copkit.profiles.BaseSizes`) and
    ``phase="mar"``: the base MAR the fine-tunes start from, trained from scratch in random
    order."""
    if phase not in PHASES:
        raise ValueError(f"unknown MAR phase {phase!r}; use one of {', '.join(PHASES)}")
    if isinstance(sizes, BaseSizes):
        if phase != "mar":
            raise ValueError(f"the base model is MAR trained from scratch (phase 'mar'); {phase!r} "
                             "is not a base")
        return sizes.configs(MARConfig, seed)
    model_cfg = MARConfig(width=sizes.width, enc_depth=sizes.enc_depth, dec_depth=sizes.dec_depth,
                          heads=sizes.heads, buffer=sizes.buffer, head_width=sizes.head_width,
                          head_depth=sizes.head_depth,
                          diffusion_batch_mul=sizes.diffusion_batch_mul,
                          mask_ratio_min=sizes.mask_ratio_min)
    if phase in ("mar", "scratch"):
        train_cfg = TrainConfig(steps=sizes.mar_steps if phase == "mar" else sizes.scratch_steps,
                                batch_size=sizes.batch_size, lr=sizes.lr,
                                warmup_steps=sizes.warmup_steps, ema_decay=sizes.ema_decay,
                                weight_decay=0.02, grad_clip=3.0, seed=seed, log_every=10,
                                ckpt_every=200, precision=sizes.precision, compile=sizes.compile)
    else:  # the paper's recipe: linear warm-up over the first 10%, then cosine to 0
        train_cfg = TrainConfig(steps=sizes.finetune_steps, batch_size=sizes.batch_size,
                                lr=sizes.finetune_lr,
                                warmup_steps=max(1, sizes.finetune_steps // 10),
                                ema_decay=sizes.ema_decay, weight_decay=0.02, grad_clip=3.0,
                                seed=seed, log_every=10, ckpt_every=200, precision=sizes.precision,
                                compile=sizes.compile)
    return model_cfg, train_cfg


# --------------------------------------------------------------------------------- generation
ORDER_SOURCES = ("random", "class-mean", "class-image", "fixed", "centre-out")


def generation_orders(source: str, labels: Tensor, generator: torch.Generator,
                      n_tokens: int = N_TOKENS, collapse: Tensor | None = None,
                      collapse_labels: Tensor | None = None, descending: bool = True) -> Tensor:
    """The MAR orders to generate ``labels`` with, when no image exists yet (Chapter 4 compares
    them):

    - ``random``: MAR's random orders;
    - ``class-mean``: the class's mean collapse order (:func:`copkit.rank.class_mean_order`);
    - ``class-image``: the collapse order of a random training image of the class;
    - ``fixed``: one order for every image and class, the training images' mean ranks
      (:func:`copkit.rank.fixed_order`): the control for whether an image's own order matters;
    - ``centre-out``: one order that knows nothing of the data, the patches nearest the centre
      first (:func:`copkit.tokens.centre_out_order` on a square grid of ``n_tokens``).

    Collapse orders enter reversed for ``descending`` (CMAR, :func:`mar_order`). The adaptive order
    is :func:`adaptive_collapse`, passed to :meth:`MAR.sample`.
    """
    if source == "random":
        return random_orders(len(labels), n_tokens, generator=generator).to(labels.device)
    if source not in ORDER_SOURCES:
        raise ValueError(f"unknown order source {source!r}; use one of {ORDER_SOURCES}")
    if source == "centre-out":
        side = math.isqrt(n_tokens)
        if side * side != n_tokens:
            raise ValueError(f"the centre-out order needs a square grid; {n_tokens} tokens are not")
        chosen = centre_out_order((side, side)).expand(len(labels), -1)
        return mar_order(chosen, descending).to(labels.device)
    if collapse is None or collapse_labels is None:
        raise ValueError(f"order source {source!r} needs the training images' collapse orders and "
                         "labels")
    if source == "class-mean":
        chosen = class_mean_order(collapse, collapse_labels,
                                  int(collapse_labels.max()) + 1)[labels.cpu()]
    elif source == "fixed":
        chosen = fixed_order(collapse).expand(len(labels), -1)
    else:
        chosen = torch.empty(len(labels), collapse.shape[1], dtype=torch.long)
        for c in labels.unique().tolist():
            pool = (collapse_labels == c).nonzero().flatten()
            where = (labels == c).nonzero().flatten().cpu()
            pick = torch.randint(0, len(pool), (len(where),),
                                 generator=torch.Generator().manual_seed(
                int(torch.randint(0, 2**31, (), generator=generator, device=generator.device))))
            chosen[where] = collapse[pool[pick]]
    return mar_order(chosen, descending).to(labels.device)


def image_generators(seed: int, labels: Tensor,
                     device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per image, seeded by (``seed``, its label, how many images of that label come
    before it): the k-th image of a class is drawn the same whatever else is in the batch."""
    seen: dict[int, int] = {}
    out = []
    for y in labels.tolist():
        k = seen[y] = seen.get(y, -1) + 1
        digest = hashlib.sha256(f"{seed}:{y}:{k}".encode()).digest()
        out.append(torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8],
                                                                             "little") >> 1))
    return out


@torch.no_grad()
def generate(model: MAR, labels: Tensor,
             orders: Tensor | Callable[[Tensor, torch.Generator], Tensor], seed: int, steps: int,
             diffusion_steps: int, cfg_scale: float = 1.0, temperature: float = 1.0,
             batch_size: int = 500, adapt: Callable | None = None, progress: bool = True,
             desc: str = "sampling", decode: Callable[[Tensor], Tensor] | None = None,
             generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """Images (n, 1, 28, 28) in [-1, 1] for ``labels`` (n,), generated in batches from one seed.
    ``orders`` is a (n, N) tensor or a function ``(batch labels, generator) -> orders``.
    ``decode`` turns tokens into images (default: 4 x 4 pixel patches of 28 x 28 images; the KL-16
    VAE's decoder for the paper's setting, :meth:`copkit.tokenizer.KLTokenizer.decode`).
    With ``generators`` (one per image, :func:`image_generators`) each image draws its noise from
    its own generator instead of the seed's shared one."""
    decode = decode or (lambda t: unpatchify(t, PATCH, (1, SIDE, SIDE)))
    if (isinstance(cfg_scale, bool) or not isinstance(cfg_scale, numbers.Real)
        or not 0 <= cfg_scale < math.inf):
        raise ValueError("cfg_scale must be a finite number >= 0 (1: no guidance), got "
                         f"{cfg_scale!r}")
    if generators is not None and len(generators) != len(labels):
        raise ValueError(f"generators: one per image, got {len(generators)} for {len(labels)} "
                         "labels")

    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for s in tqdm(range(0, len(labels), batch_size), desc=desc, disable=bars_off(progress),
                  mininterval=5.0, ncols=100):
        y = labels[s:s + batch_size].to(device)
        o = orders(y, g) if callable(orders) else orders[s:s + batch_size].to(device)
        tokens = model.sample(y, o, steps, cfg_scale, temperature=temperature,
                              diffusion_steps=diffusion_steps,
                              generator=g if generators is None
                              else list(generators[s:s + batch_size]), adapt=adapt)
        out.append(decode(tokens).clamp(-1, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def draw_given(model: MAR, tokens: Tensor, labels: Tensor, orders: Tensor, visible: int,
               generator: torch.Generator, diffusion_steps: int,
               temperature: float = 1.0) -> Tensor:
    """Every hidden token drawn once, in one pass, given the real ones: the last ``visible``
    entries of each order (MAR's convention) keep the image's own tokens (B, N, D), and each other
    token is drawn by the diffusion head from the transformer's condition, without guidance. What
    the model makes of real context, apart from the order it would generate in and from its own
    earlier draws. (B, N, D).

    >>> m = MAR(MARConfig(grid=(2, 2), token_dim=4, width=16, enc_depth=1, dec_depth=1, heads=2,
    ...                   buffer=1, head_width=16, head_depth=1)).eval()
    >>> x, o = torch.randn(3, 4, 4), torch.arange(4).repeat(3, 1)
    >>> out = draw_given(m, x, torch.zeros(3, dtype=torch.long), o, 2, torch.Generator(), 5)
    >>> bool((out[:, 2:] == x[:, 2:]).all()), bool((out[:, :2] != x[:, :2]).any())
    (True, True)
    """
    b, n, d = tokens.shape
    if not 0 <= visible <= n:
        raise ValueError(f"visible: between 0 and {n} tokens, got {visible}")
    if orders.shape != (b, n):
        raise ValueError(f"orders: one permutation of the {n} tokens per image, ({b}, {n}); got "
                         f"{tuple(orders.shape)}")
    out = tokens.clone()
    if visible == n:
        return out
    shown, hidden = orders[:, n - visible:], orders[:, :n - visible]
    z = model.forward_z(tokens, model.condition(labels), shown)
    drawn = model.diffloss.sample(gather_tokens(z, hidden).reshape(-1, z.shape[-1]),
                                  diffusion_steps, temperature=temperature, generator=generator)
    out.scatter_(1, hidden[..., None].expand(-1, -1, d), drawn.reshape(b, n - visible, d))
    return out


@torch.no_grad()
def hidden_uncertainty(model: MAR, tokens: Tensor, labels: Tensor, orders: Tensor,
                       reveal: list[int], draws: int, generator: torch.Generator,
                       diffusion_steps: int) -> Tensor:
    """How uncertain the still-hidden tokens are as an image is revealed along ``orders`` (MAR's
    convention): for each count k in ``reveal``, the last k entries of the order are given (the
    real tokens), every hidden token is drawn ``draws`` times from the model, and the summed
    per-pixel variance over the draws of all hidden tokens is returned, (B, len(reveal)).
    The claim of paper Fig. 1 in numbers: along a good order this total falls fast."""
    b, n, d = tokens.shape
    out = torch.zeros(b, len(reveal))
    cond = model.condition(labels)
    for j, k in enumerate(reveal):
        if k >= n:
            continue
        visible, hidden = orders[:, n - k:], orders[:, :n - k]
        z = model.forward_z(tokens, cond, visible)
        zh = gather_tokens(z, hidden).reshape(-1, z.shape[-1])
        x = model.diffloss.sample(zh.repeat(draws, 1), diffusion_steps, generator=generator)
        out[:, j] = x.reshape(draws, b, n - k, d).var(dim=0).sum(dim=(1, 2)).cpu()
    return out
