r"""CoMAE, the Collapse Masked Autoencoder (the paper's Sec. 3.1, Eq. 2-7, Sec. 8).

For a target patch :math:`n` of an image with tokens :math:`e_1, \dots, e_N`:

- the **selector** :math:`f` (Eq. 2) reads every token but :math:`e_n`, is told which patch is the
  target by a learned embedding :math:`q_n`, and outputs a mask :math:`w_n \in [0, 1]^N`: how much
  each other patch is needed;
- **noise injection** (Eq. 3-4) keeps token :math:`i` in proportion
  :math:`a_i = \exp\left(-(1 - w_{ni})^2 / (2\sigma^2)\right)` and replaces the rest by Gaussian
  noise: :math:`e^m_i = a_i e_i + (1 - a_i)\,\epsilon_i`;
- the **reconstructor** :math:`g` (Eq. 5) predicts :math:`e_n` from the noise-injected tokens,
  again told the target by its own :math:`q_n`;
- losses: :math:`L_r = \lVert e_n - e^*_n \rVert_1` (Eq. 5), the contrastive :math:`L_c` over the
  masks of one image's targets (Eq. 6, learnable temperature), :math:`L = L_r + 0.01\,L_c`; the
  mask entropy :math:`H_\text{mask}` (Eq. 7) measures polarisation.

Both networks are small ViTs built from timm's ``EvaBlock`` with 2-D rotary position embeddings
(timm's ``RotaryEmbeddingCat``) on the token grid, a leading [cls] (f) or [tgt cls] (g) token that
is not rotated, and the target token removed from the sequence, so nothing of :math:`e_n` can
reach :math:`w_n` or :math:`e^*_n`. Choices the paper leaves open, made here and stated in
Chapter 2:

- widths: the paper gives encoder 64 / decoder 256 (Sec. 4) and 256 / 64 (Sec. 8); we follow
  Sec. 4 (the trained models), a narrow selector and a wider reconstructor, as config fields;
- "tanh normalisation into [0, 1]" is read as :math:`(\tanh x + 1) / 2`;
- :math:`q_n` is added to the [cls] / [tgt cls] token; f and g each own their q (the alternation
  then updates disjoint parameter sets);
- the entry :math:`w_{nn}` (the target itself) means nothing: it is excluded from :math:`L_c`'s
  similarities and from :math:`H_\text{mask}`, and set to 0 by :meth:`CoMAE.masks`;
- Eq. 6 over all N targets of an image costs N forward passes per image; a config field
  ``targets_per_image`` (K) samples K distinct targets per image and applies Eq. 6 to those K
  masks (K = N is the paper's loss).
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Mlp, RotaryEmbeddingCat, apply_rot_embed_cat
from timm.models.eva import EvaBlock
from torch import Tensor, nn

from .dist import Shard
from .dist import shard as process_shard
from .profiles import BaseSizes
from .recipe import Recipe, TrainConfig, batch_indices, take
from .tokens import GRID, gather_tokens, hflip_index

__all__ = [
    "logit_variance_split",
    "CoMAEConfig",
    "READOUTS",
    "Selector",
    "Reconstructor",
    "CoMAE",
    "noise_keep",
    "inject_noise",
    "reconstruction_loss",
    "contrastive_loss",
    "mask_entropy",
    "others_index",
    "grid_rope",
    "ROPE_TEMPERATURE",
    "saved_lambda",
    "comae_step_fn",
    "evaluate",
    "CoMAEData",
    "RECIPE",
    "EXPERIMENTS",
    "from_profile",
    "fashion_mnist_data",
    "mirror_image",
    "mirror_hits",
    "masks_chunk",
    "first_token_block",
]


#: The selector's readouts (:attr:`CoMAEConfig.readout`).
READOUTS = ("cls", "token")


@dataclass(frozen=True)
class CoMAEConfig:
    """Sizes and hyper-parameters of a CoMAE (every field is part of the artifact hash)."""

    grid: tuple[int, int] = (GRID, GRID)
    token_dim: int = 16
    enc_width: int = 64  #: selector f (the paper's Sec. 4: 64)
    enc_depth: int = 4
    enc_heads: int = 4
    dec_width: int = 128  #: reconstructor g (the paper's Sec. 4: 256)
    dec_depth: int = 4
    dec_heads: int = 4
    mlp_ratio: float = 4.0
    head_depth: int = 4  #: residual layers of g's output MLP ("a four-layer residual MLP")
    #: Eq. 4 steepness :math:`\sigma` (not given by the paper); :math:`w = 0` keeps
    #: :math:`\exp(-1/(2\sigma^2))` of a token: 36% at 0.7. Not 0.4 (4% kept): there f, which moves
    #: faster than g, could close the one informative patch before g had learned to use it, and g
    #: then saw too little of it ever to learn (:math:`L_r` stayed at the level of predicting 0) -
    #: training stuck. Measured on the planted mirror (4 x 4 grid, lambda_c 1, 400 steps, 3 seeds x
    #: 2 mirror directions): the mirror has the largest weight for median 69% of targets (worst 37%)
    #: at 0.7, vs 24% (worst 0%) at 0.4 and 53% (worst 31%) at 1.0.
    sigma: float = 0.7
    #: weight :math:`\lambda_c` of :math:`L_c` in :math:`L = L_r + \lambda_c L_c`: 0.01 is the
    #: paper's. The shipped CoMAEs use 1: on the planted 6 x 6 mirror with K = N, every mask opens
    #: at 0.01 and at 0.1 and the partner is found at chance, at 1 it is found (Chapter 2,
    #: ``data/pretrained/planted-sweep.json``).
    lambda_c: float = 0.01
    tau_init: float = 0.1  #: initial temperature :math:`\tau` of Eq. 6 (learned)
    #: a floor under the learned temperature (CLIP clamps its logit scale the same way; not in the
    #: paper). Learned freely, the temperature only shrinks, and once every pair of masks differs a
    #: little L_c is near 0 and stops pressing the masks apart (see Chapter 2).
    tau_min: float = field(default=0.0, metadata={"hash_if_set": True})
    #: :math:`K` targets sampled per image per step (:math:`K = N`: the paper's Eq. 6). With
    #: :math:`K = 8` of 36 a mask only has to differ from 7 others, and a few extra open patches
    #: drawn at random make it differ as well as the partner alone does: on the planted mirror the
    #: partner then has the largest weight for 43% of targets. With :math:`K = N` (on 4 images per
    #: step, the same work) it has for 82-85% (Chapter 2).
    targets_per_image: int = 8
    contrastive: bool = True  #: False: the ablation without L_c (Table 1)
    #: training steps at the start in which only g learns (f keeps its initial, nearly uniform
    #: masks), before the alternation begins. Not in the paper, which leaves the schedule open:
    #: f moves faster than g and can close the one informative patch before g has learned to use
    #: it, after which f gets no signal to reopen it. Measured on the planted mirror (4 x 4 grid,
    #: 3 seeds x 2 directions, 400 steps, sigma 0.7): median hit rate 81% (worst 54%) with 100
    #: such steps, against 69% (worst 37%) without.
    g_warmup_steps: int = 100
    #: Where the selector's mask is read from (:class:`Selector`). ``"cls"``: the paper's Sec. 8, a
    #: linear map of the [cls] output to all N logits. ``"token"`` (not in the paper): that map plus
    #: a pointer term between the [cls] output (which carries the target's q_n) and patch i's own
    #: output h_i. With "cls" the mask can depend on *which* target it serves but hardly on *where*
    #: things are in this image: the [cls] output is a weighted sum of values that carry content
    #: only (RoPE rotates queries and keys, not values), so no output records where a content was
    #: seen. Chapter 2 measures both on planted truths.
    readout: str = field(default="cls", metadata={"hash_if_set": True})
    #: A learned absolute position embedding added to every token of f and g, beside RoPE (not in
    #: the paper, which names RoPE alone): it puts position into the values, so a token's output
    #: knows where it is.
    pos_embed: bool = field(default=False, metadata={"hash_if_set": True})
    #: The mask value f starts from: its output weights are drawn small (std 0.02) and its bias set
    #: to :math:`\operatorname{atanh}(2m - 1)` (not in the paper, which does not say how f starts).
    #: 0 leaves PyTorch's default initialisation, masks near 0.5. While g trains alone
    #: (``g_warmup_steps``) it sees the patches through these masks: near 0.5 each is half drowned
    #: in noise, and on the planted flip truth a g that learned little by then left f to settle on
    #: one mirror for every image. At 0.9, with the mask budget ``lambda_w`` 2, the paper's selector
    #: reads the image on all 3 seeds (Chapter 2).
    mask_init: float = field(default=0.0, metadata={"hash_if_set": True})
    #: weight :math:`\lambda_w` of a mask budget, :math:`\lambda_w` times the mean mask value over
    #: the patches other than the target, added to f's loss (not in the paper, whose
    #: :math:`L = L_r + \lambda_c L_c` has no term against keeping a patch open). Without it,
    #: keeping open every patch that some image needs costs nothing: on the planted flip truth f
    #: keeps both mirrors open for every image and ignores which one this image uses, a fixed mask
    #: (Chapter 2). 0: the paper's loss. 1 leaves both mirrors open on some seeds, 4 closes both, 2
    #: (with ``mask_init`` 0.9) finds the partner on every seed.
    lambda_w: float = field(default=0.0, metadata={"hash_if_set": True})
    #: steps over which the mask budget rises linearly from 0 to ``lambda_w``, counted from the end
    #: of the g warm-up (not in the paper; 0: the full budget from the first step of f). Charged
    #: from the start, the budget closes every patch before g has learned which ones help, and f
    #: then reopens, for every image, the one mirror that helps most images (Chapter 2).
    lambda_w_ramp: int = field(default=0, metadata={"hash_if_set": True})

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"CoMAEConfig.readout must be one of "
                             f"{', '.join(map(repr, READOUTS))}, got {self.readout!r}")
        if not 0.0 <= self.mask_init < 1.0:
            raise ValueError(f"CoMAEConfig.mask_init must be in [0, 1) (0: default start), "
                             f"got {self.mask_init!r}")

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def others_index(n_tokens: int, device: torch.device | str | None = None) -> Tensor:
    """(N, N-1): row n lists every token index except n, in increasing order."""
    idx = torch.arange(n_tokens, device=device)
    full = idx.expand(n_tokens, n_tokens)
    return full[full != idx[:, None]].reshape(n_tokens, n_tokens - 1)


def noise_keep(w: Tensor, sigma: float) -> Tensor:
    r"""Eq. 4: :math:`a = \exp\left(-(1 - w)^2 / (2\sigma^2)\right)`, the share of a token kept for
    mask value :math:`w`.

    Example:
        >>> noise_keep(torch.tensor([1.0, 0.0]), sigma=0.5).tolist()[0]
        1.0
        >>> round(noise_keep(torch.tensor([0.0]), sigma=0.5).item(), 6) == round(math.exp(-2.0), 6)
        True
    """
    return torch.exp(-((1.0 - w) ** 2) / (2.0 * sigma**2))


def inject_noise(tokens: Tensor, a: Tensor, noise: Tensor) -> Tensor:
    r"""Eq. 3: :math:`e^m_i = a_i e_i + (1 - a_i)\,\epsilon_i`, with ``a`` (..., L) broadcast over
    the token dim."""
    a = a.unsqueeze(-1)
    return a * tokens + (1.0 - a) * noise


def reconstruction_loss(target: Tensor, predicted: Tensor) -> Tensor:
    r""":math:`L_r = \lVert e_n - e^*_n \rVert_1` (Eq. 5): the L1 norm over the token's :math:`d`
    values, averaged over the batch."""
    return (target - predicted).abs().sum(-1).mean()


def contrastive_loss(w: Tensor, targets: Tensor, tau: Tensor) -> Tensor:
    r"""Eq. 6 for the masks of K targets of each image.

    Args:
        w: (B, K, N) masks of K targets per image.
        targets: (B, K) the target index of each mask; its own entry is zeroed before comparing
            (it is not part of the mask, and leaving it in would let masks differ by it alone).
        tau: the (learned) temperature.

    Returns:
        The mean over images of

        .. math::

            \frac1K \sum_i -\log \frac{\exp(\operatorname{sim}(w_i, w_i)/\tau)}
                {\sum_j \exp(\operatorname{sim}(w_i, w_j)/\tau)},

        with :math:`\operatorname{sim}` the cosine similarity.
    """
    own = F.one_hot(targets, w.shape[-1]).bool()
    v = F.normalize(w.masked_fill(own, 0.0), dim=-1, eps=1e-8)
    logits = v @ v.transpose(1, 2) / tau
    labels = torch.arange(w.shape[1], device=w.device).expand(w.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, w.shape[1]), labels.reshape(-1))


def mask_entropy(w: Tensor, targets: Tensor | None = None) -> Tensor:
    r"""Eq. 7: :math:`H_\text{mask} = -\frac1M \sum_i \sum_j w^i_j \log w^i_j` over :math:`M` masks
    (..., N).

    ``targets`` (matching the leading dims of ``w``) excludes each mask's own entry; masks from
    :meth:`CoMAE.masks` already hold 0 there (:math:`0 \log 0 = 0`). Lower means more polarised;
    the largest value, every entry at :math:`1/e`, is :math:`(N - 1)/e`.
    """
    terms = torch.special.xlogy(w, w)
    if targets is not None:
        terms = terms.masked_fill(F.one_hot(targets, w.shape[-1]).bool(), 0.0)
    return -terms.sum(-1).mean()


#: Inverse-frequency base of :func:`grid_rope`: per axis, the head's bands are
#: :math:`100^{-k / \mathrm{bands}}`, :math:`k = 0, \dots, \mathrm{bands} - 1` (DINOv3's base for
#: [-1, 1] coordinates; for a head of 16: 1, 0.32, 0.1, 0.03 rad per unit of coordinate).
ROPE_TEMPERATURE = 100.0


def grid_rope(head_dim: int, grid: tuple[int, int]) -> Tensor:
    r"""The 2-D rotary table (N, 2 * head_dim) of a token grid: [sin | cos], timm's
    ``RotaryEmbeddingCat`` layout for ``EvaBlock``.

    Each axis's coordinates are spread evenly over [-1, 1] (timm's ``grid_type="pixel"``) and
    rotated by inverse-frequency bands of at most 1 rad per unit (``in_pixels=False``,
    :data:`ROPE_TEMPERATURE`), so the angle between the two ends of an axis is at most
    :math:`2\ \mathrm{rad} < \pi` for every band and every grid size: the rotary similarity of two
    positions (the sum over bands of cos of their angle difference) falls strictly with their
    distance along a row or a column. timm's default for ``in_pixels=False`` puts integer
    coordinates on bands up to 1 rad per *patch*, which wraps past :math:`\pi` within 4 patches: on
    a 7 x 7 grid, column 0 was more similar to column 6 (0.946) than to column 1 (0.884), so a far
    patch looked near to attention.

    Example:
        >>> rope = grid_rope(16, (7, 7))
        >>> sin, cos = rope[:, :16:2], rope[:, 16::2]
        >>> sim = (cos[:7] * cos[0] + sin[:7] * sin[0]).sum(-1)  # along the first row
        >>> bool((sim[1:] < sim[:-1]).all())
        True
    """
    return RotaryEmbeddingCat(head_dim, in_pixels=False, grid_type="pixel",
                              temperature=ROPE_TEMPERATURE, feat_shape=list(grid)).get_embed()


def first_token_block(blk: nn.Module, x: Tensor, rope: Tensor) -> Tensor:
    """``blk(x, rope=rope)[:, 0]`` of a timm ``EvaBlock`` with one prefix token, computed for the
    first token alone: (B, N, width) -> (B, width).

    A block's output at one position needs every token's keys and values but only that position's
    query, attention row, projection and MLP. When only the [cls] output is read (f's and g's
    readout), running the last block in full spends most of its work on outputs nobody reads. The
    block's own modules and parameters are used as timm's ``EvaAttention`` uses them (fused qkv with
    its q/v biases, 2-D RoPE on the non-prefix keys, scaled dot-product attention); a block built
    with other options (a gate, q/k norms, layer scale, dropout in training) is run in full instead.
    """
    attn = blk.attn
    plain = (attn.qkv is not None and attn.gate is None and attn.num_prefix_tokens == 1
             and isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)
             and not getattr(attn, "rotate_half", False)
             and blk.gamma_1 is None and blk.gamma_2 is None
             and not (blk.training and (attn.attn_drop.p or attn.proj_drop.p)))
    if not plain:
        return blk(x, rope=rope)[:, 0]
    b, n, c = x.shape
    h = blk.norm1(x)
    if attn.q_bias is None:
        qkv = attn.qkv(h)
    else:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = attn.qkv(h) + bias if attn.qkv_bias_separate else F.linear(h, attn.qkv.weight, bias)
    q, k, v = qkv.reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    k = torch.cat([k[:, :, :1], apply_rot_embed_cat(k[:, :, 1:], rope)], dim=2).type_as(v)
    # (B, heads, 1, hd): the first token's row
    o = F.scaled_dot_product_attention(q[:, :, :1], k, v)
    o = attn.proj(attn.norm(o.transpose(1, 2).reshape(b, c)))
    y = x[:, 0] + blk.drop_path1(o)
    return y + blk.drop_path2(blk.mlp(blk.norm2(y)))


class _GridViT(nn.Module):
    """Shared body of f and g: a token embedding, a leading special token carrying q_n, and
    ``EvaBlock`` modules with 2-D RoPE on the kept tokens' grid positions."""

    def __init__(self, cfg: CoMAEConfig, width: int, depth: int, heads: int) -> None:
        super().__init__()
        if width % heads or (width // heads) % 4:
            raise ValueError(f"width {width} with {heads} heads: the head size must be a multiple "
                             "of 4 for 2-D RoPE")
        n = cfg.n_tokens
        self.embed = nn.Linear(cfg.token_dim, width)
        self.special = nn.Parameter(torch.zeros(1, width))  # [cls] or [tgt cls]
        self.q = nn.Parameter(torch.zeros(n, width))  # target embedding q_n
        nn.init.trunc_normal_(self.special, std=0.02)
        nn.init.trunc_normal_(self.q, std=0.02)
        # absolute positions (CoMAEConfig.pos_embed): in the values too, not only in RoPE's
        # rotations
        self.pos = nn.Parameter(torch.zeros(n, width)) if cfg.pos_embed else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.register_buffer("rope", grid_rope(width // heads, cfg.grid),
                             persistent=False)  # (N, 2 * head_dim)
        self.register_buffer("others", others_index(n), persistent=False)  # (N, N-1)
        self.blocks = nn.ModuleList(
            EvaBlock(width, heads, mlp_ratio=cfg.mlp_ratio, num_prefix_tokens=1)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def encode(self, kept_tokens: Tensor, target: Tensor) -> Tensor:
        """kept_tokens (B, N-1, d) in the order of ``others[target]``; returns every output of the
        last block, before the final norm (B, N, width): the special token's first, then the kept
        tokens' in that order."""
        x, rope = self._start(kept_tokens, target, self.others[target])
        for blk in self.blocks:
            x = blk(x, rope=rope)
        return x

    def body(self, kept_tokens: Tensor, target: Tensor) -> Tensor:
        """kept_tokens (B, N-1, d) in the order of ``others[target]``; returns the first output
        (B, width).

        Only the special token's output is read, so the last block is run for it alone
        (:func:`first_token_block`): its keys and values still come from every token, but its
        query, attention row and MLP from the first token only. The result equals
        ``self.norm(self.encode(...)[:, 0])`` up to float rounding (the tests check it); on the
        cpu profile's 2-block selector it is about half of the forward's work.
        """
        keep = self.others[target]
        x, rope = self._start(kept_tokens, target, keep)
        for blk in self.blocks[:-1]:
            x = blk(x, rope=rope)
        return self.norm(first_token_block(self.blocks[-1], x, rope))

    def _start(self, kept_tokens: Tensor, target: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """The first block's input (B, N, width) and the per-image rotary table
        (B, 1, N-1, 2 hd)."""
        e = self.embed(kept_tokens)
        if self.pos is not None:
            e = e + self.pos[keep]
        x = torch.cat([(self.special + self.q[target]).unsqueeze(1), e], dim=1)
        return x, self.rope[keep].unsqueeze(1).to(x.dtype)


class Selector(_GridViT):
    r""":math:`f` (Eq. 2): :math:`w_n = f(\{e_i\}_{i \ne n}; q_n) \in [0, 1]^N`.

    The logits are read as :attr:`CoMAEConfig.readout` says. ``"cls"`` (the paper's Sec. 8) maps
    the [cls] output :math:`h_0` linearly to :math:`N` logits, :math:`x_i = u_i \cdot h_0 + b_i`,
    one learned vector :math:`u_i` per position. ``"token"`` adds a pointer term from patch
    :math:`i`'s own output :math:`h_i`,

    .. math::

        x_i = u_i \cdot h_0 + b_i + (W_q h_0) \cdot (W_k h_i) / \sqrt{\mathrm{width}},

    so that where a content sits in this image can raise its logit. :math:`W_k` starts at 0, so an
    untrained "token" selector is the literal one.
    """

    def __init__(self, cfg: CoMAEConfig) -> None:
        super().__init__(cfg, cfg.enc_width, cfg.enc_depth, cfg.enc_heads)
        self.readout = cfg.readout
        self.head = nn.Linear(cfg.enc_width, cfg.n_tokens)
        # every mask starts near mask_init: small weights (timm's head init), the bias at it
        if cfg.mask_init:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.constant_(self.head.bias, math.atanh(2.0 * cfg.mask_init - 1.0))
        if cfg.readout == "token":
            self.point_q = nn.Linear(cfg.enc_width, cfg.enc_width, bias=False)
            self.point_k = nn.Linear(cfg.enc_width, cfg.enc_width, bias=False)
            nn.init.zeros_(self.point_k.weight)

    def logits(self, tokens: Tensor, target: Tensor) -> Tensor:
        r"""The pre-normalisation outputs :math:`x` of :math:`f`: :math:`w = (\tanh x + 1) / 2`.
        (B, N)

        The map is increasing, so :math:`x` orders the entries of a mask exactly as :math:`w` does,
        also where :math:`w` has saturated at 1 in floating point.
        """
        keep = self.others[target]
        if self.readout == "cls":
            return self.head(self.body(gather_tokens(tokens, keep), target))
        # (B, N, width): [cls], then keep's
        h = self.norm(self.encode(gather_tokens(tokens, keep), target))
        q = self.point_q(h[:, 0]).unsqueeze(1)  # (B, 1, width)
        # (B, N-1), in keep's order
        point = (self.point_k(h[:, 1:]) * q).sum(-1) / math.sqrt(h.shape[-1])
        return self.head(h[:, 0]).scatter_add(1, keep, point)

    def forward(self, tokens: Tensor, target: Tensor) -> Tensor:
        """tokens (B, N, d), target (B,) -> w (B, N)."""
        return (torch.tanh(self.logits(tokens, target)) + 1.0) / 2.0


class _ResidualMLP(nn.Module):
    """g's head: ``depth`` pre-norm residual MLP layers (timm's ``Mlp``), then a linear map to d."""

    def __init__(self, width: int, out_dim: int, depth: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.mlps = nn.ModuleList(Mlp(width, width, width) for _ in range(depth))
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return self.out(x)


class Reconstructor(_GridViT):
    r""":math:`g` (Eq. 5): :math:`e^*_n = g(\{e^m_i\}_{i \ne n}; q_n)`, from the noise-injected
    tokens."""

    def __init__(self, cfg: CoMAEConfig) -> None:
        super().__init__(cfg, cfg.dec_width, cfg.dec_depth, cfg.dec_heads)
        self.head = _ResidualMLP(cfg.dec_width, cfg.token_dim, cfg.head_depth)

    def forward(self, noisy_kept: Tensor, target: Tensor) -> Tensor:
        """noisy_kept (B, N-1, d) in the order of ``others[target]``, target (B,) -> e* (B, d)."""
        return self.head(self.body(noisy_kept, target))


#: per CoMAE, its compiled selector (:meth:`CoMAE.masks` with ``compiled=True``), kept beside the
#: model rather than in it, so that copying or saving a model never meets a compiled function
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class CoMAE(nn.Module):
    r"""The selector :math:`f`, the reconstructor :math:`g` and the temperature :math:`\tau` of
    Eq. 6.

    ``f_parameters()`` (f and the temperature) and ``g_parameters()`` are disjoint: the training
    alternates between them batch by batch.
    """

    def __init__(self, cfg: CoMAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.f = Selector(cfg)
        self.g = Reconstructor(cfg)
        self.log_tau = nn.Parameter(torch.tensor(math.log(cfg.tau_init)))

    def f_parameters(self) -> list[nn.Parameter]:
        return [*self.f.parameters(), self.log_tau]

    def g_parameters(self) -> list[nn.Parameter]:
        return list(self.g.parameters())

    def no_weight_decay(self) -> set[str]:
        """Matrices AdamW does not decay (:func:`copkit.recipe.weight_decay_groups`): the target
        queries q_n of f and g."""
        return {"f.q", "g.q"}

    # ---------------------------------------------------------------- the equations
    def select(self, tokens: Tensor, target: Tensor) -> Tensor:
        """Eq. 2: the mask :math:`w_n` (B, N) of target ``target`` (B,) for tokens (B, N, d)."""
        return self.f(tokens, target)

    def reconstruct(self, tokens: Tensor, target: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        r"""Eq. 3-5: inject noise into every token but the target as the mask says, then predict it.

        ``noise`` (B, N, d) is :math:`\epsilon` of Eq. 3 (standard normal), passed in so that a
        caller controls the randomness. Returns :math:`e^*_n` (B, d).
        """
        keep = self.g.others[target]  # (B, N-1)
        a = noise_keep(torch.gather(w, 1, keep), self.cfg.sigma)
        return self.g(inject_noise(gather_tokens(tokens, keep), a, gather_tokens(noise, keep)),
                      target)

    @property
    def tau(self) -> Tensor:
        r""":math:`\tau` = ``exp(log_tau)``, the temperature of Eq. 6, not below ``cfg.tau_min``."""
        return self.log_tau.exp().clamp(min=self.cfg.tau_min)

    def budget_weight(self, step: int) -> float:
        """The weight of the mask budget at training step ``step``: ``cfg.lambda_w``, ramped up
        linearly over ``cfg.lambda_w_ramp`` steps after the ``cfg.g_warmup_steps`` of g alone."""
        ramp = self.cfg.lambda_w_ramp
        done = step - self.cfg.g_warmup_steps
        return self.cfg.lambda_w * (1.0 if ramp <= 0 else min(max(done / ramp, 0.0), 1.0))

    def losses(self, tokens: Tensor, generator: torch.Generator, grad_f: bool = True,
               shard: Shard | None = None, lambda_w: float | None = None) -> dict[str, Tensor]:
        r""":math:`L_r`, :math:`L_c`, :math:`L = L_r + \lambda_c L_c` and :math:`H_\text{mask}` on a
        batch of images (B, N, d).

        K = ``cfg.targets_per_image`` distinct targets are drawn per image. With ``grad_f=False``
        the masks are computed without gradient (a step of g). With a ``shard``
        (:class:`copkit.dist.Shard`), ``tokens`` are this process's rows of a global batch: the
        targets and the noise are drawn for the whole global batch and cut to these rows, so
        that the processes together draw what one process would. ``lambda_w`` overrides
        ``cfg.lambda_w``, the weight of the mask budget (:meth:`budget_weight` at a step).
        """
        b, n, d = tokens.shape
        shard = shard or Shard.whole(b)
        if shard.size != b:
            raise ValueError(f"the shard has {shard.size} rows but {b} images were given")
        k = min(self.cfg.targets_per_image, n)
        targets = shard.cut(torch.rand(shard.total, n, generator=generator,
                                       device=tokens.device).argsort(1)[:, :k])
        flat_tokens = tokens.repeat_interleave(k, dim=0)  # (B K, N, d)
        flat_targets = targets.reshape(-1)
        with torch.set_grad_enabled(grad_f and torch.is_grad_enabled()):
            w = self.select(flat_tokens, flat_targets)
        noise = torch.randn((shard.total, k, n, d), generator=generator, device=tokens.device,
                            dtype=tokens.dtype)
        noise = shard.cut(noise).reshape(b * k, n, d)
        pred = self.reconstruct(flat_tokens, flat_targets, w, noise)
        truth = flat_tokens[torch.arange(b * k, device=tokens.device), flat_targets]
        l_r = reconstruction_loss(truth, pred)
        w3 = w.reshape(b, k, n)
        l_c = (contrastive_loss(w3, targets, self.tau) if k > 1
               else torch.zeros((), device=tokens.device))
        total = l_r + self.cfg.lambda_c * l_c if self.cfg.contrastive else l_r
        lambda_w = self.cfg.lambda_w if lambda_w is None else lambda_w
        if lambda_w:  # the mask budget: the mean of each mask over the other patches
            others = ~F.one_hot(flat_targets, n).bool()
            total = total + lambda_w * w[others].mean()
        return {"loss": total, "L_r": l_r, "L_c": l_c,
                "H_mask": mask_entropy(w, flat_targets).detach(), "tau": self.tau.detach()}

    # ---------------------------------------------------------------- all masks of an image
    @torch.inference_mode()
    def masks(self, tokens: Tensor, chunk: int | None = None, autocast: bool = False,
              logits: bool = False, compiled: bool = False) -> Tensor:
        """The masks of every target of every image: (B, N, N), row :math:`n` is :math:`w_n`,
        diagonal 0.

        All N targets of ``chunk`` images go through f as one batch of chunk * N sequences (no
        Python loop over targets); ``chunk`` bounds the memory (None: :func:`masks_chunk` of the
        device; the result does not depend on it). The forward runs in float32 on
        every device, also inside a caller's autocast: the collapse order ranks these values, and
        bfloat16 would rank near-tied scores by its rounding. ``autocast=True`` asks for bfloat16
        autocast (faster on a GPU, for timing). Returns float32 on the input's device.
        With ``logits=True`` the pre-normalisation values are returned instead (diagonal -inf),
        which rank a mask's entries without the ties of saturated w.

        ``compiled=True`` runs f through ``torch.compile`` (compiled once per model and kept; the
        first call spends 20-60 s compiling). On a CPU the forward is mostly element-wise work
        (GELU, LayerNorm, RoPE, copies) that the compiler fuses: about 2.5 times the images per
        second of the eager forward on the cpu profile's CoMAE (``make bench``), worth it for the
        whole data set, not for a few hundred images. The masks agree with the eager ones to float
        rounding (about 1e-7). Where the compiler cannot run (no C++ compiler), a warning says so
        and the eager forward is used.
        """
        was_training = self.training
        self.eval()
        b, n, d = tokens.shape
        chunk = chunk or masks_chunk(tokens.device)
        select = self._compiled_select(logits) if compiled else (self.f.logits if logits
                                                                 else self.f)
        target = torch.arange(n, device=tokens.device)
        out = torch.empty(b, n, n, device=tokens.device, dtype=torch.float32)
        eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
        for s in range(0, b, chunk):
            x = tokens[s:s + chunk]
            c = x.shape[0]
            with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=autocast):
                w = select(x.repeat_interleave(n, dim=0), target.repeat(c))
            out[s:s + c] = w.float().reshape(c, n, n).masked_fill(eye, -math.inf if logits else 0.0)
        self.train(was_training)
        return out

    def _compiled_select(self, logits: bool):
        """f (or f.logits) through ``torch.compile``, made once and kept outside the module tree (so
        the state dict and ``parameters()`` are unchanged); the eager one, with a warning, where
        compiling fails."""
        cache = _COMPILED.setdefault(self, {})
        if logits not in cache:
            eager = self.f.logits if logits else self.f
            fast = torch.compile(eager)

            def select(tokens: Tensor, target: Tensor) -> Tensor:
                if cache.get("failed"):
                    return eager(tokens, target)
                try:
                    return fast(tokens, target)
                except Exception as err:  # noqa: BLE001 (the compiler's errors have no common type)
                    warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                                  "computing the masks eagerly", RuntimeWarning, stacklevel=3)
                    cache["failed"] = True
                    return eager(tokens, target)

            cache[logits] = select
        return cache[logits]


def masks_chunk(device: torch.device | str) -> int:
    """How many images' masks :meth:`CoMAE.masks` computes in one forward of f by default: 4 on a
    CPU, 256 on an accelerator.

    On a CPU the element-wise work of a forward (RoPE, GELU, LayerNorm, copies) costs more than
    its matrix products, and it runs at memory speed once the activations leave the cache. The
    activations of 4 images' N sequences of N tokens stay in cache: with the shipped CoMAE (7 x 7
    grid, f 32 wide) one core computed 88 masks of images per second at 4 images per forward,
    against 40 at 64 (``make bench`` measures it). A GPU wants large batches instead.
    """
    return 4 if torch.device(device).type == "cpu" else 256


# -------------------------------------------------------------------- training (copkit.train)
def comae_step_fn(model: CoMAE, tokens: Tensor, batch_size: int, seed: int):
    r"""The alternating step of CoMAE for :func:`copkit.train.train`.

    ``tokens`` is anything indexed by a tensor of image indices that gives (B, N, d) tokens: a
    tensor, or a :class:`copkit.tokenizer.TokenSource` over images read from disk.

    The first ``cfg.g_warmup_steps`` steps update g only; after them, even steps update f (and
    the temperature) with :math:`L = L_r + \lambda_c L_c`, the reconstructor held fixed, and odd
    steps update g with :math:`L_r`, the masks computed without gradient. Two AdamW optimisers (keys
    ``"f"`` and ``"g"``) rather than one with frozen groups: each keeps moments and weight decay for
    its own network only, so a network is left exactly as it was on the other's steps.
    """
    device = next(model.parameters()).device
    part = process_shard(batch_size)

    def step_fn(step: int, gen: torch.Generator):
        f_turn = step % 2 == 0 and step >= model.cfg.g_warmup_steps
        for p in model.g_parameters():
            p.requires_grad_(not f_turn)  # f's step needs gradients through g, not of g
        x = take(tokens, part.cut(batch_indices(len(tokens), batch_size, step, seed)), device)
        out = model.losses(x, gen, grad_f=f_turn, shard=part, lambda_w=model.budget_weight(step))
        loss = out["loss"] if f_turn else out["L_r"]
        logs = {k: v.detach() for k, v in out.items() if k != "loss"}
        return loss, "f" if f_turn else "g", logs

    return step_fn


@torch.no_grad()
def evaluate(model: CoMAE, tokens: Tensor, seed: int = 0, bins: int = 20) -> dict:
    r"""Validation numbers for a batch of images (B, N, d): :math:`L_r` with every target,
    :math:`H_\text{mask}` and a histogram of the off-diagonal mask values of :meth:`CoMAE.masks`.

    The noise of Eq. 3 is drawn from a fixed generator, so values at different steps compare.
    """
    was = model.training
    model.eval()
    b, n, d = tokens.shape
    w_all = model.masks(tokens)  # (B, N, N)
    off = ~torch.eye(n, dtype=torch.bool, device=tokens.device)
    g = torch.Generator(device=tokens.device).manual_seed(seed)
    target = torch.arange(n, device=tokens.device).repeat(b)
    x = tokens.repeat_interleave(n, dim=0)
    noise = torch.randn(x.shape, generator=g, device=tokens.device)
    pred = torch.cat([model.reconstruct(x[s:s + 4096], target[s:s + 4096],
                                        w_all.reshape(-1, n)[s:s + 4096], noise[s:s + 4096])
                      for s in range(0, x.shape[0], 4096)])
    l_r = reconstruction_loss(x[torch.arange(x.shape[0], device=x.device), target], pred)
    values = w_all[:, off].flatten().float().cpu()
    hist = torch.histc(values, bins=bins, min=0.0, max=1.0)
    model.train(was)
    return {"val_L_r": float(l_r), "val_H_mask": float(mask_entropy(w_all)),
            "w_hist": (hist / hist.sum()).tolist(), "w_mean": float(values.mean())}


@dataclass(frozen=True, eq=False)
class CoMAEData:
    """What a CoMAE trains on (:data:`RECIPE`): ``tokens`` (n, N, d), anything indexed by a tensor
    of image indices (a tensor, or a :class:`copkit.tokenizer.TokenSource` over images read from
    disk), and ``val_tokens`` (m, N, d), the held-out images :func:`evaluate` scores
    during training."""

    tokens: Any
    val_tokens: Tensor


def _step(model: CoMAE, cfg: CoMAEConfig, tc: "TrainConfig", data: CoMAEData):
    return comae_step_fn(model, data.tokens.to(next(model.parameters()).device), tc.batch_size,
                         tc.seed)


def _evaluate(model: CoMAE, data: CoMAEData) -> dict:
    return evaluate(model, data.val_tokens.to(next(model.parameters()).device))


#: How :func:`copkit.train.fit` trains a CoMAE, with the alternating step (:func:`comae_step_fn`),
#: two optimisers ("f": the selector and the temperature; "g": the reconstructor), validation
#: numbers (:func:`evaluate`, raw weights) every ``eval_every`` steps; runs in
#: ``<data_dir>/runs/comae-<hash8>``.
#:
#: :meta hide-value:
RECIPE = Recipe(name="comae", module="comae", build=lambda cfg, data: CoMAE(cfg), step=_step,
                parameters=lambda m: {"f": [*m.f.named_parameters(prefix="f"),
                                            ("log_tau", m.log_tau)],
                                      "g": list(m.g.named_parameters(prefix="g"))},
                evaluate=_evaluate)

#: The CoMAE trainings of a profile (:func:`from_profile`). ``main`` is Chapter 2's (and the photo
#: CoMAE of Chapter 3), ``mirror`` the mirrored Fashion-MNIST experiment (``mirror_steps``),
#: ``planted`` the planted truth of mirrored 8 x 8 white noise in 2 x 2 patches (a 4 x 4 grid of
#: 4-dim tokens, every target of an image in Eq. 6, narrower networks; ``planted_steps``).
EXPERIMENTS = ("main", "mirror", "planted", "planted-long")


def from_profile(sizes, seed: int, *, lambda_c: float | None = None,
                 experiment: str = "main") -> tuple[CoMAEConfig, "TrainConfig"]:
    """The CoMAE and training configurations of a profile (:class:`copkit.profiles.ComaeSizes`)
    for one seed, one weight of L_c (None: :func:`saved_lambda`, the paper's 0.01) and one of the
    :data:`EXPERIMENTS`. Every chapter and ``python -m copkit config train-comae`` take them
    from here."""
    # a base CoMAE: its section of the pretraining config sets lambda_c
    if isinstance(sizes, BaseSizes):
        return sizes.configs(CoMAEConfig, seed)
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown CoMAE experiment {experiment!r}; use one of "
                         f"{', '.join(EXPERIMENTS)}")
    lam = saved_lambda(sizes) if lambda_c is None else lambda_c
    cfg = CoMAEConfig(enc_width=sizes.enc_width, enc_depth=sizes.enc_depth,
                      enc_heads=sizes.enc_heads, dec_width=sizes.dec_width,
                      dec_depth=sizes.dec_depth, dec_heads=sizes.dec_heads,
                      targets_per_image=sizes.targets_per_image, sigma=sizes.sigma, lambda_c=lam,
                      contrastive=lam > 0, g_warmup_steps=sizes.g_warmup_steps)
    if experiment.startswith("planted"):
        cfg = replace(cfg, grid=(4, 4), token_dim=4, enc_width=32, enc_depth=2, enc_heads=2,
                      dec_width=32, dec_depth=2, dec_heads=2, targets_per_image=16)
    steps = {"main": sizes.steps, "mirror": sizes.mirror_steps, "planted": sizes.planted_steps,
             "planted-long": sizes.planted_long_steps}[experiment]
    tc = TrainConfig(steps=steps, batch_size=sizes.batch_size, lr=sizes.lr,
                     warmup_steps=sizes.warmup_steps, ema_decay=sizes.ema_decay, seed=seed,
                     eval_every=sizes.eval_every, log_every=10,
                     ckpt_every=max(sizes.eval_every, 50), precision=sizes.precision,
                     compile=sizes.compile)
    return cfg, tc


def saved_lambda(sizes) -> float:
    """The L_c weight of the CoMAE a profile saves: the paper's 0.01 when the profile trains it."""
    return 0.01 if 0.01 in sizes.lambdas else max(sizes.lambdas)


def fashion_mnist_data(sizes) -> dict:
    """The data description (part of every hash) of a profile's Fashion-MNIST CoMAE runs."""
    return {"dataset": "fashion-mnist", "split": "train",
            "train_images": (sizes.train_images or 60000) - 5000, "patch": 4}


def mirror_image(images: Tensor) -> Tensor:
    """Images whose right half is their left half mirrored (the planted truth of the mirror test):
    each patch off the centre column then has an exact, flipped copy at its mirror position."""
    out = images.clone()
    w = images.shape[-1]
    out[..., w - w // 2:] = torch.flip(images[..., :w // 2], dims=[-1])
    return out


@torch.no_grad()
def mirror_hits(model: CoMAE, tokens: Tensor, grid_w: int, skip_centre: bool = True) -> float:
    """The share of targets whose largest mask value (read before the [0, 1] squashing, so without
    ties) is on the target's mirror patch, on mirror-symmetric ``tokens`` (B, N, d) of a grid
    ``grid_w`` wide; ``skip_centre`` leaves out the targets on a centre column (their own mirror).
    Chance is :math:`1 / (N - 1)`."""
    n = tokens.shape[1]
    top = model.masks(tokens, logits=True).argmax(-1).cpu()
    mirror = hflip_index(n, grid_w)
    keep = mirror != torch.arange(n) if skip_centre else torch.ones(n, dtype=torch.bool)
    return float((top[:, keep] == mirror[keep]).float().mean())


def logit_variance_split(model: CoMAE, tokens: Tensor,
                         chunk: int | None = None) -> dict[str, float]:
    """How much of the selector's output is specific to the image: the variance of f's logits
    x[image, target, position] (:meth:`CoMAE.masks` with ``logits=True``) split into position,
    target, image and their interactions (:func:`copkit.stats.variance_shares`), with
    ``image_specific`` the share of every term that involves the image. 0 would mean one fixed set
    of masks for every image (the masks of a target depend only on where it is); 1 that nothing is
    shared. Each mask's own entry, which f also outputs but the mask does not use, is set to the
    mean of that mask's other logits so that the array stays complete.
    """
    from copkit.stats import variance_shares

    x = model.masks(tokens, chunk=chunk, logits=True).double()
    eye = torch.eye(x.shape[-1], dtype=torch.bool, device=x.device)
    fill = x.masked_fill(eye, 0.0).sum(-1, keepdim=True) / (x.shape[-1] - 1)
    x = torch.where(eye, fill.expand_as(x), x)
    shares = variance_shares(x.cpu().numpy(), ("image", "target", "position"))
    shares["image_specific"] = sum(v for k, v in shares.items() if "image" in k)
    return shares
