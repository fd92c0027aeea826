r"""CViT: classifying from the top of the collapse order (the paper's Sec. 3.4, Table 5, Fig. 8).

A timm :class:`~timm.models.vision_transformer.VisionTransformer` is used as it is (its patch
embedding, position embedding, blocks, norm and head); :func:`forward_keep` only removes patch
tokens from the sequence *after* the position embeddings were added, so every kept token carries
its own position and the class token is always kept. Dropped tokens are gone from the sequence
(no mask tokens), which is where the saving comes from.

The paper's four models and one pruning baseline, as :class:`CViTConfig` ``train_drop`` values:

- ``"none"``: ViT, trained on full images. At test it is evaluated with *random* drop (ViT) and with
  *collapse-order* drop (ViT+C, the same weights).
- ``"random"``: RViT, trained with a random subset of patches dropped.
- ``"collapse"``: CViT, trained keeping the top of the collapse order (dropping its lowest ranks).
- ``"learned"``: a token-pruning baseline in the spirit of DynamicViT (Rao et al. 2021): a learned
  keep-score head per stage prunes patch tokens *between blocks* down to the same final count
  (:class:`PrunedViT`). It is not DynamicViT: see that class for the differences.

The drop ratio of a training batch follows a "cosine annealing schedule favouring low ratios"
(Sec. 3.4), read here as :math:`r = r_{\max}\,(1 - \cos(\pi u / 2))` with :math:`u \sim U(0, 1)`
(:func:`sample_drop_ratio`, density :func:`drop_ratio_pdf`).

Evaluation over mask ratios (the sweep, AuC and the knee) is in :mod:`copkit.curves`; FLOPs,
timing and throughput in :mod:`copkit.efficiency`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .dist import Shard
from .dist import shard as process_shard
from .profiles import BaseSizes, CvitSizes
from .recipe import Recipe, TrainConfig, batch_indices, host_generator, take, to_device
from .tokens import N_TOKENS, PATCH, SIDE, flip_batch, gather_tokens

__all__ = [
    "CViTConfig", "MODEL_KINDS", "make_vit", "n_keep", "forward_keep",
    "drop_ratio_pdf", "drop_ratio_cdf", "sample_drop_ratio", "prune_stages", "stage_counts",
    "PrunedViT", "build_model", "timm_skeleton", "shift_batch", "cvit_step_fn", "CViTData",
    "RECIPE", "from_profile", "fashion_mnist_data", "PAPER_RATIOS", "PAPER_TABLE5", "PAPER_KNEE",
    "PAPER_ATTENTION_SAVING", "paper_value",
]

#: the model kinds of Table 5 and how each is trained
MODEL_KINDS = {"vit": "none", "rvit": "random", "cvit": "collapse", "pruned": "learned"}
_SCHEDULES = ("cosine", "uniform", "none")

# ------------------------------------------------------------------------ the paper's numbers
#: The mask ratios of the paper's Table 5 columns.
PAPER_RATIOS = (0.0, 0.3, 0.5, 0.78)
#: The paper's Table 5 (ImageNet-1k, a fine-tuned ViT-B/16, one run each), the one place the
#: book holds it: top-1 and top-5 accuracy (%) at each of :data:`PAPER_RATIOS` (``"top1@78"``)
#: and the area under the top-1 curve (``"auc"``), by model. The DynamicViT row is filed under
#: the name of the book's pruning baseline, ``"DynamicViT-style"``, which stands beside it.
PAPER_TABLE5: dict[str, dict[str, float]] = {
    name: dict(zip(["top1@0", "top5@0", "top1@30", "top5@30", "top1@50", "top5@50", "top1@78",
                    "top5@78", "auc"], row))
    for name, row in {
        "ViT": [82.91, 96.28, 80.03, 94.80, 74.38, 91.48, 22.38, 36.76, 57.16],
        "DynamicViT-style": [81.74, 95.64, 81.44, 95.46, 77.54, 93.30, 20.66, 37.09, 56.32],
        "ViT+C": [82.84, 96.23, 78.09, 93.82, 71.67, 89.58, 31.04, 49.45, 57.27],
        "RViT": [83.10, 96.46, 81.33, 95.60, 78.94, 94.50, 67.27, 87.23, 70.86],
        "CViT": [83.11, 96.50, 81.37, 95.69, 79.39, 94.63, 70.57, 88.94, 72.19],
    }.items()
}
#: Where the paper reads CViT's knee off its Fig. 8 (Sec. 5), the mask ratio and top-1 (%) there.
PAPER_KNEE = {"mask_ratio": 0.78, "top1": 70.6}
#: The paper's attention saving at 22% of the patches kept, in % (Sec. 5), which is
#: :math:`1 - 0.22^2`.
PAPER_ATTENTION_SAVING = 95.16


def paper_value(model: str, column: str, ratio: float | None = None) -> float:
    """One number of the paper's Table 5 (:data:`PAPER_TABLE5`): ``column`` is ``"top1"`` or
    ``"top5"`` at mask ``ratio`` (one of :data:`PAPER_RATIOS`), or ``"auc"``.

    >>> paper_value("CViT", "top1", 0.78), paper_value("ViT", "auc")
    (70.57, 57.16)
    """
    if model not in PAPER_TABLE5:
        raise KeyError(f"the paper's Table 5 has no model {model!r}; it has "
                       f"{', '.join(PAPER_TABLE5)}")
    if column == "auc":
        if ratio is not None:
            raise ValueError("the AuC has no mask ratio")
        return PAPER_TABLE5[model]["auc"]
    if column not in ("top1", "top5"):
        raise ValueError(f"column must be 'top1', 'top5' or 'auc', got {column!r}")
    if ratio is None or not any(abs(ratio - r) < 1e-9 for r in PAPER_RATIOS):
        raise ValueError(f"Table 5 has the mask ratios {PAPER_RATIOS}, not {ratio!r}")
    return PAPER_TABLE5[model][f"{column}@{round(100 * ratio)}"]


@dataclass(frozen=True)
class CViTConfig:
    """A classifier of the CViT chapter: the timm ViT's size and how patches are dropped in
    training.

    ``train_drop``: ``"none"`` (ViT), ``"random"`` (RViT), ``"collapse"`` (CViT) or ``"learned"``
    (the pruning baseline, :class:`PrunedViT`). ``schedule``: the drop-ratio distribution of
    :func:`sample_drop_ratio` (``"cosine"``: the paper's reading; ``"uniform"``; ``"none"``: no
    drop).
    """

    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    train_drop: str = "collapse"
    schedule: str = "cosine"
    max_drop: float = 0.99  #: :math:`r_{\max}`: the largest training drop ratio (Sec. 3.4: 0-99%)
    #: random horizontal flip, orders flipped alongside (copkit.tokens.flip_order)
    flip: bool = True
    #: random translation of each batch by up to ``shift`` pixels (zero-filled), the base ViT's
    #: augmentation; 0 for the collapse-ordered models, whose orders are fixed to the patch grid
    shift: int = field(default=0, metadata={"hash_if_set": True})
    label_smoothing: float = 0.0
    img_size: int = SIDE
    patch: int = PATCH
    classes: int = 10
    #: a timm model name (e.g. "vit_base_patch16_224.augreg_in21k", the paper's IN-21k ViT-B/16) to
    #: start from pretrained weights (:func:`make_vit`); width, depth, heads and mlp_ratio are then
    #: the pretrained model's. None: a ViT of the sizes above from scratch.
    timm_model: str | None = field(default=None, metadata={"hash_if_set": True})
    #: image channels (3 for ImageNet)
    in_chans: int = field(default=1, metadata={"hash_if_set": True})

    def __post_init__(self) -> None:
        if self.train_drop not in MODEL_KINDS.values():
            raise ValueError(f"train_drop must be one of {sorted(MODEL_KINDS.values())}, got "
                             f"{self.train_drop!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.max_drop < 1.0:
            raise ValueError(f"max_drop must be in [0, 1), got {self.max_drop}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.shift < 0 or (self.shift and self.train_drop == "collapse"):
            raise ValueError("shift must be >= 0, and 0 for CViT (its orders name fixed patches); "
                             f"got {self.shift}")


def make_vit(cfg: CViTConfig, weights: str | Path | None = None) -> nn.Module:
    """timm's own ``VisionTransformer``: by default for 28 x 28 one-channel images with 4 x 4
    patches (a 7 x 7 grid), a class token, learned absolute position embeddings and a linear head
    (Sec. 3.4's ViT, scaled down).

    With ``cfg.timm_model`` set, the pretrained timm model of that name (the paper: ViT-B/16 with
    IN-21k weights, ``vit_base_patch16_224.augreg_in21k``), its weights read from the local file
    ``weights`` (safetensors, timm's layout) or, when None, fetched from the hub (online only).
    timm resizes its position embeddings to ``cfg.img_size`` (256 puts a ViT-B/16 on CoMAE's 16 x 16
    grid) and gives it a new head of ``cfg.classes`` outputs when the class count differs.
    """
    if cfg.timm_model is None:
        return VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch, in_chans=cfg.in_chans,
                                 num_classes=cfg.classes, embed_dim=cfg.width, depth=cfg.depth,
                                 num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, global_pool="token",
                                 class_token=True)

    overlay = {}
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"no weights file at {weights} for {cfg.timm_model}: give a "
                                    "local .safetensors file of that model (timm's layout), or "
                                    "leave it out to fetch from the hub online")
        overlay = {"file": str(weights)}
    try:
        vit = timm.create_model(cfg.timm_model, pretrained=True, pretrained_cfg_overlay=overlay,
                                num_classes=cfg.classes, img_size=cfg.img_size,
                                in_chans=cfg.in_chans, patch_drop_rate=0.0)
    except (OSError, RuntimeError) as err:
        if weights is None:
            raise RuntimeError(f"could not fetch the weights of {cfg.timm_model} from the hub "
                               f"({err}); this machine may be offline: download them elsewhere and "
                               "give the local file") from err
        raise
    if vit.patch_embed.patch_size[0] != cfg.patch:
        raise ValueError(f"{cfg.timm_model} has {vit.patch_embed.patch_size[0]}-pixel patches but "
                         f"the config says patch = {cfg.patch}: the collapse orders would not line "
                         "up with its tokens")
    return vit


def n_keep(ratio: float, n_tokens: int = N_TOKENS) -> int:
    r"""Patch tokens kept when a fraction ``ratio`` is masked (Sec. 3.4, Table 5's mask ratios):
    :math:`\operatorname{round}((1 - \text{ratio})\,N)`, at least 1.

    >>> [n_keep(r) for r in (0.0, 0.3, 0.5, 0.78, 0.99)]
    [49, 34, 25, 11, 1]
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a mask ratio must be in [0, 1], got {ratio}")
    return max(1, min(n_tokens, int(math.floor((1.0 - ratio) * n_tokens + 0.5))))


def _check_vit(vit: nn.Module) -> None:
    for name in ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head",
                 "num_prefix_tokens"):
        if not hasattr(vit, name):
            raise TypeError(f"expected a timm VisionTransformer, got {type(vit).__name__} (no "
                            f"{name!r})")
    if not isinstance(vit.patch_drop, nn.Identity):
        raise ValueError("the ViT has timm's PatchDropout enabled (patch_drop_rate > 0), which "
                         "would drop tokens again after ours; build it with patch_drop_rate=0")


def forward_keep(vit: nn.Module, images: Tensor, keep: Tensor | None = None) -> Tensor:
    """Logits of a timm ViT that sees only the patch tokens ``keep`` of each image (Sec. 3.4).

    The patches are embedded and given their position embeddings exactly as timm does, then each
    image's patch tokens are gathered with ``keep`` (one batched gather, no loop over images); the
    class (prefix) tokens are always kept. ``norm_pre``, the blocks, the final norm and the head
    are timm's. With ``keep=None`` this is ``vit(images)``.

    Args:
        vit: a timm ``VisionTransformer``.
        images: (B, C, H, W).
        keep: None, (K,) indices used for every image, or (B, K) long indices into the N patches
            (any order: a token carries its position embedding, so order does not change logits).
            Indices given on the host (a list, a CPU tensor) are range-checked with a clear error;
            a GPU tensor is not (reading it would make the host wait for the GPU), and an index out
            of range fails there as a device-side assertion.

    Example (keeping all 49 patches is timm's own forward):

    >>> vit = make_vit(CViTConfig(width=16, depth=1, heads=2)).eval()
    >>> x = torch.randn(2, 1, 28, 28)
    >>> torch.allclose(forward_keep(vit, x, torch.arange(49).expand(2, 49)), vit(x), atol=1e-5)
    True
    >>> forward_keep(vit, x, torch.tensor([[0, 5, 9], [48, 1, 2]])).shape
    torch.Size([2, 10])

    Returns:
        (B, classes) logits.
    """
    _check_vit(vit)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    t = vit._pos_embed(vit.patch_embed(images))
    if keep is not None:
        p = vit.num_prefix_tokens
        prefix, patches = t[:, :p], t[:, p:]
        n, b = patches.shape[1], images.shape[0]
        keep = torch.as_tensor(keep)
        if keep.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"keep must hold integer token indices, got {keep.dtype}")
        if keep.dim() == 1:
            keep = keep.unsqueeze(0).expand(b, -1)
        if keep.dim() != 2 or keep.shape[0] != b:
            raise ValueError(f"keep must be (K,) or (B={b}, K), got {tuple(keep.shape)}")
        if keep.shape[1] == 0:
            raise ValueError("keep must name at least one patch token")
        if keep.device.type == "cpu" and (int(keep.min()) < 0 or int(keep.max()) >= n):
            raise ValueError(f"keep indices must lie in [0, {n}), got [{int(keep.min())}, "
                             f"{int(keep.max())}]")
        keep = to_device(keep, t.device)
        t = torch.cat([prefix, gather_tokens(patches, keep.long())], dim=1)
    x = vit.norm(vit.blocks(vit.norm_pre(t)))
    return vit.forward_head(x)


# ------------------------------------------------------------------------- the drop-ratio schedule
def drop_ratio_pdf(r: np.ndarray | float, max_drop: float = 0.99) -> np.ndarray:
    r"""Density of :func:`sample_drop_ratio`'s cosine schedule (Sec. 3.4): with
    :math:`s = r / r_{\max}` (:math:`r_{\max}` = ``max_drop``),

    .. math::

        p(r) = \frac{2}{\pi\,r_{\max} \sqrt{s\,(2 - s)}} \quad \text{on } (0, r_{\max}],

    largest near 0 (low ratios favoured)."""
    s = np.asarray(r, dtype=float) / max_drop
    inside = (s > 0) & (s <= 1)
    out = np.zeros_like(s)
    out[inside] = 2.0 / (math.pi * max_drop * np.sqrt(s[inside] * (2.0 - s[inside])))
    return out


def drop_ratio_cdf(r: np.ndarray | float, max_drop: float = 0.99) -> np.ndarray:
    r""":math:`P(\text{ratio} \le r)` of the cosine schedule (Sec. 3.4):
    :math:`\frac{2}{\pi} \arccos(1 - r / r_{\max})`, clipped to [0, 1]."""
    s = np.clip(np.asarray(r, dtype=float) / max_drop, 0.0, 1.0)
    return 2.0 / math.pi * np.arccos(1.0 - s)


def sample_drop_ratio(n: int, generator: torch.Generator | None = None, max_drop: float = 0.99,
                      schedule: str = "cosine") -> Tensor:
    r"""Drop ratios for ``n`` training batches (Sec. 3.4: "a cosine annealing schedule favouring low
    ratios" over 0-99%).

    Our reading: a cosine annealing curve :math:`r(u) = r_{\max}\,(1 - \cos(\pi u / 2))`
    (:math:`r_{\max}` = ``max_drop``) rises slowly from 0 and steeply towards :math:`r_{\max}`;
    evaluating it at a uniform :math:`u` puts most mass at low ratios. Density
    :func:`drop_ratio_pdf`, mean :math:`r_{\max}\,(1 - 2 / \pi) \approx 0.36\,r_{\max}`, median
    :math:`r_{\max}\,(1 - \cos(\pi / 4)) \approx 0.29\,r_{\max}`. ``"uniform"``:
    :math:`r = r_{\max}\,u`; ``"none"``: 0.

    Returns:
        (n,) float64 ratios in :math:`[0, r_{\max}]`.

    >>> r = sample_drop_ratio(100_000, torch.Generator().manual_seed(0))
    >>> round(r.mean().item(), 2), round(0.99 * (1 - 2 / math.pi), 2)  # the density's mean
    (0.36, 0.36)
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= max_drop < 1.0:
        raise ValueError(f"max_drop must be in [0, 1), got {max_drop}")
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    if schedule == "none":
        return torch.zeros_like(u)
    if schedule == "uniform":
        return max_drop * u
    return max_drop * (1.0 - torch.cos(math.pi * u / 2.0))


# ----------------------------------------------------------------------- the pruning baseline
def prune_stages(depth: int) -> tuple[int, ...]:
    """Blocks before which :class:`PrunedViT` (Table 5's DynamicViT row) prunes: DynamicViT's 3
    stages at 1/4, 2/4, 3/4 of the depth (blocks 3, 6, 9 of 12), kept inside 1 .. depth - 1.

    >>> prune_stages(12), prune_stages(6), prune_stages(4), prune_stages(2)
    ((3, 6, 9), (2, 3, 4), (1, 2, 3), (1,))
    """
    if depth < 2:
        raise ValueError(f"pruning between blocks needs at least 2 blocks, got depth={depth}")
    return tuple(sorted({min(depth - 1, max(1, round(depth * s / 4))) for s in (1, 2, 3)}))


def stage_counts(n_tokens: int, final: int, stages: int) -> list[int]:
    r"""Tokens kept after each of ``stages`` pruning stages so that the last keeps ``final``:
    DynamicViT's geometric schedule, :math:`N\,(\mathrm{final} / N)^{s / S}` after stage
    :math:`s` of :math:`S`.

    >>> stage_counts(49, 11, 3)
    [30, 18, 11]
    """
    if not 1 <= final <= n_tokens:
        raise ValueError(f"final keep count must be in [1, {n_tokens}], got {final}")
    f = final / n_tokens
    return [max(final, int(math.floor(n_tokens * f ** (s / stages) + 0.5)))
            for s in range(1, stages + 1)]


class _KeepScore(nn.Module):
    """DynamicViT's predictor: a local feature per token and a global one (the mean over the
    tokens still kept), concatenated, then an MLP to one keep score per token."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.out = nn.Sequential(nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.local(x)
        half = h.shape[-1] // 2
        g = h[..., half:].mean(1, keepdim=True).expand(-1, h.shape[1], -1)
        return self.out(torch.cat([h[..., :half], g], -1)).squeeze(-1)


class PrunedViT(nn.Module):
    """Token pruning inside a timm ViT, in the spirit of DynamicViT: before each block of
    :func:`prune_stages` a learned keep-score head scores the remaining patch tokens and keeps the
    top ones, so that after the last stage ``n_keep`` remain (DynamicViT's geometric schedule,
    :func:`stage_counts`). The class token is always kept; the first blocks see every patch.

    What differs from DynamicViT (honestly): the tokens are really removed in training too (a
    hard top-k on the scores plus Gumbel noise, for exploration) and the scores learn through a
    straight-through gate, kept token * (1 + sigmoid(s) - sigmoid(s).detach()), instead of
    Gumbel-softmax attention masking; there is no ratio loss (top-k fixes the count) and no
    distillation from a teacher; it is trained from scratch with the same drop-ratio
    distribution and budget as CViT rather than fine-tuned from a pretrained DeiT.
    """

    def __init__(self, vit: nn.Module, stages: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_vit(vit)
        self.vit = vit
        depth = len(vit.blocks)
        self.stages = tuple(stages) if stages is not None else prune_stages(depth)
        ok = (self.stages and all(1 <= s < depth for s in self.stages)
              and list(self.stages) == sorted(set(self.stages)))
        if not ok:
            raise ValueError(f"stages must be increasing block indices in [1, {depth}), got "
                             f"{self.stages}")
        self.scorers = nn.ModuleList(_KeepScore(vit.embed_dim) for _ in self.stages)

    def no_weight_decay(self) -> set[str]:
        """The wrapped ViT's exemptions from weight decay (timm's: position embedding, class
        token)."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}

    def forward(self, images: Tensor, n_keep: int | None = None,
                generator: torch.Generator | None = None, return_kept: bool = False,
                shard: Shard | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, classes) with ``n_keep`` patch tokens left after the last stage (None: all).
        In training mode a ``generator`` adds Gumbel noise to the scores (drawn for the global
        batch of ``shard`` and cut to these rows under torchrun). With ``return_kept`` also the
        (B, n_keep) indices of the patches that survived every stage."""
        vit = self.vit
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        p = vit.num_prefix_tokens
        prefix, patches = t[:, :p], t[:, p:]
        b, n = patches.shape[:2]
        kept = torch.arange(n, device=images.device).expand(b, n)
        counts = stage_counts(n, n if n_keep is None else n_keep, len(self.stages))
        stage_of = {blk: i for i, blk in enumerate(self.stages)}
        for i, block in enumerate(vit.blocks):
            s = stage_of.get(i)
            if s is not None and counts[s] < patches.shape[1]:
                scores = self.scorers[s](patches)
                noisy = scores
                if self.training and generator is not None:
                    rows = shard.total if shard is not None else scores.shape[0]
                    u = torch.rand((rows, *scores.shape[1:]), generator=generator,
                                   device=scores.device)
                    u = shard.cut(u) if shard is not None else u
                    noisy = scores - torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
                top = noisy.topk(counts[s], dim=1).indices
                patches, kept = gather_tokens(patches, top), kept.gather(1, top)
                if self.training:
                    gate = torch.sigmoid(scores.gather(1, top))
                    patches = patches * (1.0 + gate - gate.detach()).unsqueeze(-1)
            x = block(torch.cat([prefix, patches], dim=1))
            prefix, patches = x[:, :p], x[:, p:]
        logits = vit.forward_head(vit.norm(torch.cat([prefix, patches], dim=1)))
        return (logits, kept) if return_kept else logits


def build_model(cfg: CViTConfig, weights: str | Path | None = None) -> nn.Module:
    """The network of a Table 5 configuration: a timm ViT (:func:`make_vit`), wrapped in
    :class:`PrunedViT` for ``"learned"``."""
    vit = make_vit(cfg, weights)
    return PrunedViT(vit) if cfg.train_drop == "learned" else vit


def timm_skeleton(cfg: CViTConfig) -> nn.Module:
    """The network of a configuration with a ``timm_model``, its weights random instead of the
    pretrained ones (nothing is downloaded): for a run's checkpoint to fill, or to time a step."""
    vit = timm.create_model(cfg.timm_model, pretrained=False, num_classes=cfg.classes,
                            img_size=cfg.img_size, in_chans=cfg.in_chans, patch_drop_rate=0.0)
    return PrunedViT(vit) if cfg.train_drop == "learned" else vit


# ----------------------------------------------------------------------------------- training
def shift_batch(images: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """The batch translated by (dy, dx), each drawn uniformly from -shift..shift, the uncovered
    border filled with the background (-1, black in [-1, 1])."""
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    h, w = images.shape[-2:]
    out = torch.full_like(images, -1.0)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def cvit_step_fn(model: nn.Module, cfg: CViTConfig, images: Tensor, labels: Tensor,
                 orders: Tensor | None, batch_size: int,
                 seed: int) -> Callable[[int, torch.Generator], tuple[Tensor, str, dict]]:
    """One training step for :func:`copkit.train.train`: a batch, a random flip, one drop ratio for
    the batch from :func:`sample_drop_ratio`, then the kept set: the top of the collapse order
    (CViT), a random subset (RViT), all patches (ViT) or the learned pruner's choice; cross-entropy.
    The draws happen in a fixed sequence from the step's generator (flip, ratio, random order)."""
    if cfg.train_drop == "collapse" and orders is None:
        raise ValueError("CViT (train_drop='collapse') needs the collapse orders of the training "
                         "images")
    device = next(model.parameters()).device
    n_tokens = (cfg.img_size // cfg.patch) ** 2
    part = process_shard(batch_size)

    def step_fn(step: int, gen: torch.Generator):
        idx = part.cut(batch_indices(len(images), batch_size, step, seed))
        x, y = take(images, idx, device), take(labels, idx, device)
        o = take(orders, idx, device) if cfg.train_drop == "collapse" else None
        if cfg.flip:
            flips = part.cut(torch.rand(part.total, generator=gen, device=gen.device) < 0.5)
            x, o = flip_batch(x, o, flips, cfg.patch)
        if cfg.shift:
            x = shift_batch(x, cfg.shift, host_generator(gen))
        ratio = float(sample_drop_ratio(1, host_generator(gen), cfg.max_drop, cfg.schedule)[0])
        k = n_keep(ratio, n_tokens)
        if cfg.train_drop == "learned":
            logits = model(x, n_keep=k, generator=gen, shard=part)
        elif cfg.train_drop == "none" or k == n_tokens:
            logits = forward_keep(model, x)
        elif cfg.train_drop == "collapse":
            logits = forward_keep(model, x, o[:, :k])
        else:  # random
            rand = part.cut(torch.rand(part.total, n_tokens, generator=gen,
                                       device=gen.device)).to(device)
            logits = forward_keep(model, x, rand.argsort(1)[:, :k])
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        return loss, "model", {"acc": acc.detach(), "kept": k}

    return step_fn


@dataclass(frozen=True, eq=False)
class CViTData:
    """What a classifier of Table 5 trains on (:data:`RECIPE`): images (n, C, H, W) (a tensor, or a
    source indexed by a tensor of indices: :class:`copkit.imagefolder.ImageFolderImages`), labels
    (n,), the collapse orders (n, N) for CViT, and a local file of pretrained ``weights`` for
    ``CViTConfig.timm_model`` (None: the hub, online). Tensors are moved to the training device."""

    images: Any
    labels: Tensor
    orders: Tensor | None = None
    weights: str | Path | None = None

    def __post_init__(self) -> None:
        if (len(self.images) != self.labels.shape[0]
            or (self.orders is not None and self.orders.shape[0] != len(self.images))):
            raise ValueError(f"images ({len(self.images)}), labels ({self.labels.shape[0]}) and "
                             f"orders ({None if self.orders is None else self.orders.shape[0]}) "
                             "must have the same length")


def _step(model: nn.Module, model_cfg: CViTConfig, train_cfg: TrainConfig, data: CViTData):
    device = next(model.parameters()).device
    images = data.images.to(device) if isinstance(data.images, Tensor) else data.images
    orders = (data.orders.to(device) if data.orders is not None
              and model_cfg.train_drop == "collapse" else None)
    return cvit_step_fn(model, model_cfg, images, data.labels.to(device), orders,
                        train_cfg.batch_size, train_cfg.seed)


def _start(model: nn.Module, state) -> None:
    """A fine-tune's starting weights: a model's own, or a plain ViT's into the pruner's ViT."""
    if isinstance(model, PrunedViT) and not any(k.startswith("vit.") for k in state):
        model.vit.load_state_dict(state)
    else:
        model.load_state_dict(state)


#: How :func:`copkit.train.fit` trains ViT / RViT / CViT / the pruner of Table 5
#: (:func:`cvit_step_fn`, one optimiser "model"); runs in ``<data_dir>/runs/cvit-<hash8>``.
#:
#: :meta hide-value:
RECIPE = Recipe(name="cvit", module="model", build=lambda cfg, data: build_model(cfg, data.weights),
                step=_step, start=_start)


def from_profile(sizes: CvitSizes | BaseSizes, seed: int, *,
                 kind: str = "cvit") -> tuple[CViTConfig, TrainConfig]:
    """The configuration of one Table 5 model (``kind``: ``vit``, ``rvit``, ``cvit``, ``pruned``;
    :data:`MODEL_KINDS`) at a profile's sizes (:class:`copkit.profiles.CvitSizes`) and its training:
    ``epochs`` passes over the profile's training images (all 60,000 when None), one seed. Every
    chapter and ``python -m copkit config train-cvit`` take them from here.

    With the ``vit`` section of the pretraining config (:class:`copkit.profiles.BaseSizes`) and
    ``kind="vit"``: the base ViT every kind fine-tunes, trained on full images."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    drop = MODEL_KINDS[kind]
    if isinstance(sizes, BaseSizes):
        if drop != "none":
            raise ValueError(f"the base model is a plain ViT (kind 'vit'); {kind!r} fine-tunes it")
        return sizes.configs(CViTConfig, seed, train_drop=drop, schedule="none")
    model_cfg = CViTConfig(width=sizes.width, depth=sizes.depth, heads=sizes.heads,
                           mlp_ratio=sizes.mlp_ratio, train_drop=drop,
                           schedule="none" if drop == "none" else sizes.schedule,
                           max_drop=sizes.max_drop)
    train_cfg = TrainConfig(steps=sizes.epochs * (sizes.train_images or 60000) // sizes.batch_size,
                            batch_size=sizes.batch_size, lr=sizes.lr,
                            warmup_steps=sizes.warmup_steps, ema_decay=sizes.ema_decay, seed=seed,
                            log_every=25, ckpt_every=200, precision=sizes.precision,
                            compile=sizes.compile)
    return model_cfg, train_cfg


def fashion_mnist_data(images: int, orders_comae: str | None = None, patch: int = PATCH) -> dict:
    """The data description (part of every run's hash) of a Table 5 model trained on the first
    ``images`` Fashion-MNIST training images in ``patch`` x ``patch`` patches; for CViT, with the
    collapse orders of the CoMAE whose hash is ``orders_comae`` (the other kinds use no orders):
    Chapter 5's, and ``train-cvit``'s on the same data."""
    data = {"dataset": "fashion-mnist", "split": "train", "train_images": images, "patch": patch}
    return data if orders_comae is None else {**data, "orders_comae": orders_comae}
