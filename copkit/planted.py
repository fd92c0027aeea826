"""Planted truths for CoMAE: token sets whose informative patch per target is known by construction.

A CoMAE is meant to find, for each target patch of an image, the patches it depends on. On real
images nobody knows those; here they are planted, so a trained selector can be scored against them.
Every token is *flat* (its d values are equal): the reconstructor g never sees the mask, and can
tell a kept token from one replaced by the Gaussian noise of Eq. 3 only by its content, which for a
flat token it can (noise is not flat). On white-noise tokens clean and noised look alike, and a
truth built from them would test g's guessing rather than f's finding.

- ``"mirror"`` (a *positional* truth): the top half of the grid holds flat levels drawn at random
  and the bottom half mirrors it top to bottom, so target n's one informative patch is its mirror,
  at the same place in every image. A selector that ignores the image can find it.
- ``"flip"`` (*image-specific*, dense): each image mirrors either top-bottom (every level positive)
  or left-right (every level negative), drawn per image; every target's partner is its mirror under
  the image's own flip, which the sign of any patch tells.
- ``"dipole"`` (an *image-specific* truth): every token is 0 except two, at positions drawn per
  image, which hold a flat level and its negative. Each of the two is predictable from the other
  alone (its negative), and where the other is changes from image to image. Every target of the
  image, also an empty one, is minus the sum of the others, so g needs no count of what it sees.
- ``"pair"``: the same with one level on both. Now g must first tell a pair target (one flat patch
  visible) from an empty one (two visible) before the partner helps, and under the L1 loss of Eq. 5
  it predicts 0 until it can (2 of N targets have a partner, so 0 is the median).
- ``"pairs"``: the same with three pairs of distinct levels, so that more targets have a partner.
- ``"matching"``: every patch is in one of N/2 pairs (a random perfect matching, a distinct level
  per pair). Here the partner alone does not tell g the target: only the whole image says which
  visible level has lost its twin, so the truth plants a dependency on the image, not on one patch.

:func:`partner_hits` scores a selector: the share of targets with a planted partner whose largest
mask logit (:meth:`copkit.comae.CoMAE.masks`, before squashing, so without ties) is on it. Chance
is 1 / (N - 1). :func:`partner_error` says whether g learned to use the partner at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .tokens import hflip_index

__all__ = ["KINDS", "VARIANTS", "VARIANT_WORDS", "BAR", "Planted", "planted",
           "partner_hits", "partner_ranks", "partner_error",
           "FLIP_SPLIT", "flip_top_bottom", "flip_split", "runs_of", "flip_reading",
           "chance", "fit_planted", "planted_configs", "summarize", "meets_bar",
           "setting_text", "load_sweep"]

#: What a selector must do on a planted truth to count as finding it. Within ``steps`` training
#: steps on a 6 x 6 grid, over at least ``seeds`` seeds, the median seed puts the largest mask logit
#: on the partner for at least ``median`` of the targets, and the worst seed for at least ``worst``.
BAR = {"median": 0.8, "worst": 0.5, "steps": 2000, "seeds": 3}

#: The planted truths :func:`planted` makes.
KINDS = ("mirror", "flip", "dipole", "pair", "pairs", "matching")


@dataclass(frozen=True)
class Planted:
    """Tokens (n, N, d) and, for each image and target, its planted partner (n, N) (-1: none)."""

    tokens: Tensor
    partners: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx) -> "Planted":
        return Planted(self.tokens[idx], self.partners[idx])


def _flat(levels: Tensor, token_dim: int) -> Tensor:
    return levels.unsqueeze(-1).expand(*levels.shape, token_dim).contiguous()


def _paired(n: int, a: Tensor, b: Tensor, level_a: Tensor, level_b: Tensor,
            token_dim: int) -> Planted:
    """Images of N = ``n`` tokens, 0 but at positions ``a`` and ``b`` (n_images, k), which hold
    ``level_a`` and ``level_b`` and are each other's partners (every other token: -1, none)."""
    levels = torch.zeros(a.shape[0], n)
    levels.scatter_(1, a, level_a)
    levels.scatter_(1, b, level_b)
    partners = torch.full((a.shape[0], n), -1, dtype=torch.long)
    partners.scatter_(1, a, b)
    partners.scatter_(1, b, a)
    return Planted(_flat(levels, token_dim), partners)


def planted(kind: str, n_images: int, grid: tuple[int, int] = (6, 6), token_dim: int = 4,
            seed: int = 0) -> Planted:
    """``n_images`` images of the planted truth ``kind`` (:data:`KINDS`) on a ``grid`` of flat
    tokens.

    ``"mirror"``: levels uniform in [-2, 2] on the top rows, mirrored onto the bottom rows (the
    grid needs an even number of rows); every target's partner is its mirror. ``"pair"``: two
    positions drawn per image hold one level, of random sign and size uniform in [1, 2]; every
    other token is 0 and has no partner (-1); ``"dipole"`` puts its negative on the second position.
    ``"pairs"``: three pairs at positions drawn per image,
    three distinct levels from +-0.5, +-1.25, +-2. ``"matching"``: a random perfect matching of the
    N patches, pair k at the k-th of N/2 levels evenly spaced over [-2, 2] (shuffled per image).

    >>> p = planted("pair", 3, grid=(4, 4), token_dim=2)
    >>> [int((row >= 0).sum()) for row in p.partners]
    [2, 2, 2]
    >>> m = planted("mirror", 2, grid=(4, 4), token_dim=1)
    >>> bool((m.tokens[0, m.partners[0]] == m.tokens[0]).all())
    True
    """
    if kind not in KINDS:
        raise ValueError(f"unknown planted truth {kind!r}; use one of {', '.join(KINDS)}")
    rows, cols = grid
    n = rows * cols
    if n_images < 1 or token_dim < 1 or rows < 2 or cols < 1:
        raise ValueError(f"planted needs n_images >= 1, token_dim >= 1 and a grid of 2 rows or "
                         f"more; got n_images={n_images}, token_dim={token_dim}, grid={grid}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(n)
    tb = (rows - 1 - idx // cols) * cols + idx % cols  # where each patch lands flipped top-bottom
    if kind == "mirror":
        if rows % 2:
            raise ValueError(f"the mirror truth needs an even number of grid rows, got grid={grid}")
        levels = torch.rand(n_images, n, generator=g) * 4 - 2
        levels[:, n // 2:] = levels[:, tb[n // 2:]]
        return Planted(_flat(levels, token_dim), tb.expand(n_images, n).clone())
    if kind == "flip":
        if rows % 2 or cols % 2:
            raise ValueError(f"the flip truth needs an even number of grid rows and columns, "
                             f"got grid={grid}")
        lr = hflip_index(n, cols)
        # this image mirrors top-bottom, else left-right
        top = torch.rand(n_images, generator=g) < 0.5
        mirror = torch.where(top[:, None], tb, lr)
        levels = torch.rand(n_images, n, generator=g) * 1.5 + 0.5
        first = torch.where(top[:, None], idx < n // 2, idx % cols < cols // 2)
        levels = torch.where(first, levels, levels.gather(1, mirror))
        levels = levels * torch.where(top, 1.0, -1.0)[:, None]  # the sign says which mirror
        return Planted(_flat(levels, token_dim), mirror)
    if kind == "pairs":  # three pairs of distinct, well-separated levels on an empty image
        k = 3
        pos = torch.rand(n_images, n, generator=g).argsort(1)[:, :2 * k]
        cand = torch.cat([torch.linspace(0.5, 2, k), -torch.linspace(0.5, 2, k)])
        lv = cand[torch.rand(n_images, 2 * k, generator=g).argsort(1)[:, :k]]  # (n, k) distinct
        return _paired(n, pos[:, :k], pos[:, k:], lv, lv, token_dim)
    if kind == "matching":
        # a random perfect matching per image
        perm = torch.rand(n_images, n, generator=g).argsort(1)
        a, b = perm[:, : n // 2], perm[:, n // 2:]
        lv = torch.linspace(-2, 2, n // 2)  # a distinct level per pair
        lv = lv[torch.rand(n_images, n // 2, generator=g).argsort(1)]
        return _paired(n, a, b, lv, lv, token_dim)
    pos = torch.rand(n_images, n, generator=g).argsort(1)[:, :2]  # two distinct positions per image
    level = (torch.rand(n_images, generator=g) + 1) * (torch.randint(0, 2, (n_images,), generator=g)
                                                       * 2 - 1)
    other = -level if kind == "dipole" else level
    return _paired(n, pos[:, :1], pos[:, 1:], level[:, None], other[:, None], token_dim)


def chance(n_tokens: int) -> float:
    """The hit rate of a selector that points at a random other patch: 1 / (N - 1)."""
    return 1.0 / (n_tokens - 1)


@torch.no_grad()
def partner_hits(model, data: Planted, per_image: bool = False) -> float | Tensor:
    """The share of targets with a planted partner whose largest mask logit is on that partner.

    ``model`` is a :class:`copkit.comae.CoMAE`; the logits are :meth:`~copkit.comae.CoMAE.masks`
    with ``logits=True`` (the target's own entry is -inf there, so it never wins). With
    ``per_image`` the share is returned per image (n,) instead of over all targets.
    """
    top = model.masks(data.tokens.to(next(model.parameters()).device), logits=True).argmax(-1).cpu()
    has = data.partners >= 0
    hit = (top == data.partners) & has
    if per_image:
        return hit.sum(1).float() / has.sum(1).clamp(min=1).float()
    return float(hit.sum() / has.sum())


@torch.no_grad()
def partner_ranks(model, data: Planted) -> Tensor:
    """For every target with a planted partner, how many other patches have a larger mask logit
    than the partner (0: the partner has the largest, a hit of :func:`partner_hits`), as a 1-D
    tensor over those targets. Its share at or below k - 1 says whether the partner is among the
    k patches a mask keeps most."""
    x = model.masks(data.tokens.to(next(model.parameters()).device), logits=True).cpu()
    has = data.partners >= 0
    at_partner = x.gather(2, data.partners.clamp(min=0).unsqueeze(-1))
    return (x > at_partner).sum(-1)[has]


#: The numbers :func:`flip_split` gives.
FLIP_SPLIT = ("hit_top_bottom", "hit_left_right", "points_top_bottom", "points_left_right",
              "mask_top_bottom", "mask_left_right", "mask_mean")


def flip_top_bottom(data: Planted) -> Tensor:
    """(n,) bool: which images of the ``"flip"`` truth mirror top to bottom (their levels are
    positive); the others mirror left to right."""
    return data.tokens[:, 0, 0] > 0


@torch.no_grad()
def flip_split(model, data: Planted, grid_w: int) -> dict[str, float]:
    """Whether a selector reads the image on the ``"flip"`` truth, or points at one mirror whatever
    the image: the hit rate (:func:`partner_hits`) on the top-bottom images and on the left-right
    images apart, and the share of all targets, over both kinds of image, whose largest mask logit
    is on the top-bottom mirror and on the left-right mirror; and the mean mask value at each mirror
    and over all other patches. A selector that reads the image scores both hit rates alike and
    opens one mirror per image (each mirror's mean mask near one half); one that learned a fixed
    mirror scores one hit rate near 1, the other near 0, and points at that mirror on every image;
    one that keeps both mirrors open for every image has both mean masks near 1."""
    top = flip_top_bottom(data)
    n = data.tokens.shape[1]
    idx = torch.arange(n)
    tb = (n // grid_w - 1 - idx // grid_w) * grid_w + idx % grid_w
    lr = hflip_index(n, grid_w)
    tokens = data.tokens.to(next(model.parameters()).device)
    largest = model.masks(tokens, logits=True).argmax(-1).cpu()
    w = model.masks(tokens).cpu()
    hit = (largest == data.partners).float()
    return {"hit_top_bottom": float(hit[top].mean()), "hit_left_right": float(hit[~top].mean()),
            "points_top_bottom": float((largest == tb).float().mean()),
            "points_left_right": float((largest == lr).float().mean()),
            "mask_top_bottom": float(w[:, idx, tb].mean()),
            "mask_left_right": float(w[:, idx, lr].mean()),
            "mask_mean": float(w.sum() / (w.shape[0] * n * (n - 1)))}


def fit_planted(kind: str, cfg, tc, data_dir, n_train: int = 4000, n_test: int = 500,
                progress: bool = False, device: str = "cpu"):
    """Train a CoMAE (``cfg``, a :class:`copkit.comae.CoMAEConfig` whose grid and token size the
    truth takes) on ``n_train`` images of the planted truth ``kind`` with :func:`copkit.train.fit`
    (``tc``, run folder under ``data_dir``), and score it on ``n_test`` fresh images (another
    seed of :func:`planted`). Returns ``(fitted, hit rate)``.
    """
    from .comae import RECIPE, CoMAEData
    from .train import fit

    data = planted(kind, n_train, cfg.grid, cfg.token_dim, seed=0)
    test = planted(kind, n_test, cfg.grid, cfg.token_dim, seed=1)
    fitted = fit(RECIPE, cfg, tc, CoMAEData(data.tokens, test.tokens[:64]),
                 {"planted": kind, "images": n_train, "grid": list(cfg.grid)}, data_dir,
                 progress=progress, device=device)
    return fitted, partner_hits(fitted.model, test)


#: The selector variants tried on the planted truths (fields of :class:`copkit.comae.CoMAEConfig`):
#: the paper's literal selector, an absolute position embedding beside RoPE, the per-token readout,
#: and both.
VARIANTS: dict[str, dict] = {
    "literal": {},
    "pos": {"pos_embed": True},
    "token": {"readout": "token"},
    "pos+token": {"pos_embed": True, "readout": "token"},
}
#: The :data:`VARIANTS` in words, for tables.
VARIANT_WORDS = {"literal": "the paper's ([cls] readout, RoPE only)", "pos": "+ position embedding",
                 "token": "per-token readout",
                 "pos+token": "per-token readout + position embedding"}


def planted_configs(variant: str, seed: int, steps: int = 2000, lambda_c: float = 0.01,
                    grid: tuple[int, int] = (6, 6), train: dict | None = None, **overrides):
    """The CoMAE and training configurations of a planted-truth run: the shipped CoMAEs' sizes
    (selector 32 wide, reconstructor 64, two blocks each, K = 8 targets per image, sigma 0.7, 100
    steps of g first), 2 x 2 flat patches (d = 4) on ``grid``, batch 16 at lr 3e-3, with the
    :data:`VARIANTS` entry ``variant``, any further CoMAEConfig ``overrides`` and TrainConfig
    fields ``train`` (e.g. ``{"batch_size": 4}``)."""
    from .comae import CoMAEConfig
    from .train import TrainConfig

    if variant not in VARIANTS:
        raise ValueError(f"unknown selector variant {variant!r}; use one of {', '.join(VARIANTS)}")
    sizes = dict(grid=grid, token_dim=4, enc_width=32, enc_depth=2, enc_heads=2, dec_width=64,
                 dec_depth=2, dec_heads=4, targets_per_image=8, sigma=0.7, lambda_c=lambda_c,
                 contrastive=lambda_c > 0)
    cfg = CoMAEConfig(**{**sizes, **VARIANTS[variant], **overrides})
    tc = TrainConfig(**{**dict(steps=steps, batch_size=16, lr=3e-3, warmup_steps=50, ema_decay=0.99,
                               seed=seed, eval_every=max(steps // 4, 1), log_every=50,
                               ckpt_every=500), **(train or {})})
    return cfg, tc


@torch.no_grad()
def partner_error(model, data: Planted, seed: int = 0) -> dict[str, float]:
    """Whether the reconstructor uses what the selector keeps: :math:`L_r` (Eq. 5) on the targets
    with a partner, with the model's own masks and a fixed draw of the noise of Eq. 3, beside the
    :math:`L_r` of
    predicting 0 for them (what a reconstructor that learned nothing of the partner does best
    under L1)."""
    device = next(model.parameters()).device
    tokens = data.tokens.to(device)
    b, n, d = tokens.shape
    rows, cols = (data.partners >= 0).nonzero(as_tuple=True)
    w = model.masks(tokens)[rows, cols]
    x = tokens[rows]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    target = cols.to(device)
    pred = torch.cat([model.reconstruct(x[s:s + 2048], target[s:s + 2048], w[s:s + 2048],
                                        noise[s:s + 2048])
                      for s in range(0, len(rows), 2048)])
    truth = x[torch.arange(len(rows), device=device), target]
    return {"partner_L_r": float((truth - pred).abs().sum(-1).mean()),
            "zero_L_r": float(truth.abs().sum(-1).mean())}


def summarize(rows: list[dict]) -> list[dict]:
    """One line per setting (selector variant, truth, L_c weight, further config fields (``set``,
    with TrainConfig fields under ``"train"``), steps) of
    planted-truth runs (the rows ``tools/planted_sweep.py`` writes): the seeds, the median, lowest
    and highest hit rate, the untrained selector's median hit rate, chance, the median L_r on the
    partnered targets beside that of predicting 0, and the medians of :func:`flip_split`'s numbers
    (:data:`FLIP_SPLIT`; None where a run lacks them)."""
    import json
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        extra = {**r.get("set", {}), **({"train": r["train"]} if r.get("train") else {})}
        key = (r["variant"], r["kind"], r["lambda_c"], json.dumps(extra, sort_keys=True),
               r["steps"])
        groups.setdefault(key, []).append(r)
    out = []
    for (variant, kind, lam, extra, steps), rs in groups.items():
        hits = [r["hit"] for r in rs]
        out.append({"variant": variant, "kind": kind, "lambda_c": lam, "set": json.loads(extra),
                    "steps": steps, "seeds": sorted(r["seed"] for r in rs),
                    "median": statistics.median(hits), "min": min(hits),
                    "max": max(hits), "init_median": statistics.median(r["init_hit"] for r in rs),
                    "chance": rs[0]["chance"],
                    "partner_L_r": statistics.median(r["partner_L_r"] for r in rs),
                    "zero_L_r": statistics.median(r["zero_L_r"] for r in rs),
                    **{k: statistics.median(r[k] for r in rs) if all(k in r for r in rs) else None
                       for k in FLIP_SPLIT}})
    return out


def meets_bar(line: dict) -> bool:
    """Whether a :func:`summarize` line clears :data:`BAR` (enough seeds, within its steps, median
    and worst seed at or above the bar)."""
    return (len(line["seeds"]) >= BAR["seeds"] and line["steps"] <= BAR["steps"]
            and line["median"] >= BAR["median"] and line["min"] >= BAR["worst"])


_SETTING_WORDS = {"targets_per_image": "K = {} targets per image",
                  "tau_min": "temperature floor {}",
                  "g_warmup_steps": "{} steps of g alone first", "mask_init": "masks start at {}",
                  "enc_width": "selector width {}", "enc_depth": "selector depth {}",
                  "enc_heads": "selector heads {}", "batch_size": "{} images per step",
                  "lambda_w": "mask budget {}", "lambda_w_ramp": "budget ramped up over {} steps",
                  "final_lr": "lr held at the end at {}"}


def runs_of(rows: list[dict], variant: str, kind: str, lambda_c: float,
            setting: dict) -> list[dict]:
    """The rows of one setting (as :func:`summarize` keys it: ``setting`` holds the CoMAEConfig
    fields with the TrainConfig fields under ``"train"``), one per seed, in seed order."""
    def extra(r: dict) -> dict:
        return {**r.get("set", {}), **({"train": r["train"]} if r.get("train") else {})}
    return sorted((r for r in rows
                   if (r["variant"], r["kind"], r["lambda_c"]) == (variant, kind, lambda_c)
                   and extra(r) == setting), key=lambda r: r["seed"])


def flip_reading(row: dict) -> str:
    """What a flip run's selector does, from its :func:`flip_split` numbers: ``"reads the image"``
    when it finds the partner on at least half of both kinds of image; else ``"both open"`` when
    the mean mask is at least 0.5 at both mirrors (a selector that reads the image keeps each
    mirror open on about half of the images only, and one settled on a mirror closes the other);
    ``"both closed"`` when it is below 0.25 at both; else the mirror it settles on for every image
    (``"top-bottom"`` or ``"left-right"``, the one with the higher hit rate)."""
    if min(row["hit_top_bottom"], row["hit_left_right"]) >= 0.5:
        return "reads the image"
    masks = row.get("mask_top_bottom"), row.get("mask_left_right")
    if None not in masks and min(masks) >= 0.5:
        return "both open"
    if None not in masks and max(masks) < 0.25:
        return "both closed"
    return "top-bottom" if row["hit_top_bottom"] >= row["hit_left_right"] else "left-right"


def setting_text(line: dict, beside: dict | None = None) -> str:
    """A :func:`summarize` line's training settings in words, beside :func:`planted_configs`'
    defaults: "lambda_c 1, K = 36 targets per image, 4 images per step, ...". With ``beside`` (a
    setting as in ``line["set"]``), only what differs from it (lambda_c is then left out).

    >>> setting_text({"lambda_c": 1.0, "set": {"tau_min": 0.1, "train": {"batch_size": 4}}})
    'lambda_c 1, temperature floor 0.1, 4 images per step'
    >>> setting_text({"lambda_c": 1.0, "set": {"tau_min": 0.1, "mask_init": 0.9}},
    ...              beside={"tau_min": 0.1})
    'masks start at 0.9'
    """
    extra = dict(line.get("set", {}))
    train = extra.pop("train", {}) or {}
    if beside is None:
        words = [f"lambda_c {line['lambda_c']:g}"]
    else:
        base = dict(beside)
        base_train = base.pop("train", {}) or {}
        extra = {k: v for k, v in extra.items() if base.get(k) != v}
        train = {k: v for k, v in train.items() if base_train.get(k) != v}
        words = []
    for key, value in [*sorted(extra.items()), *sorted(train.items())]:
        form = _SETTING_WORDS.get(key, key + " {}")
        words.append(form.format(f"{value:g}" if isinstance(value, float) else value))
    return ", ".join(words)


def load_sweep(path=None) -> list[dict]:
    """The planted-truth runs shipped in ``data/pretrained/planted-sweep.json`` (written by
    ``tools/planted_sweep.py``), as rows for :func:`summarize`."""
    import json
    from pathlib import Path

    from .data import project_root

    file = (Path(path) if path is not None
            else project_root() / "data" / "pretrained" / "planted-sweep.json")
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing: it ships with the repository (git checkout "
                                "data/pretrained/planted-sweep.json), "
                                "or rerun tools/planted_sweep.py")
    rows = json.loads(file.read_text())["rows"]
    if not rows:
        raise ValueError(f"{file} holds no runs")
    return rows
