"""MAR and CMAR: masked autoregressive generation of continuous tokens with a per-token diffusion
head, in a random order (MAR, Li et al. 2024) or in the collapse order (CMAR, the paper's Sec. 3.3).

A small MAR that keeps what makes MAR what it is (ANCHORS.md lists the official code's conventions):

- **orders** are per image, a (B, N) long tensor. MAR's convention, kept here: the *first* entries
  of the order are masked, so the *tail* is what the model sees in training and what it generates
  first. A collapse order (best patch first, :func:`copkit.rank.collapse_order`) therefore enters
  CMAR reversed (:func:`mar_order`): its best patches sit at the tail.
- **training** (:meth:`MAR.loss`): one mask ratio per batch from a truncated normal on
  [``mask_ratio_min``, 1] (mode 1, scale 0.25); the first ``ceil(N r)`` entries of each order are
  masked; an MAE-style encoder sees the class-embedding buffer and the visible tokens, a decoder
  adds mask tokens; 10% of labels are replaced by a learned fake class (for CFG); the diffusion
  loss is taken on masked tokens only, each repeated ``diffusion_batch_mul`` times with fresh noise.
- **DiffLoss** (:class:`DiffLoss`): an AdaLN residual MLP per token conditioned on the decoder
  output, a cosine noise schedule over 1000 steps, epsilon prediction.
- **generation** (:meth:`MAR.sample`): MAR's cosine schedule over S steps (after step s,
  ``floor(N cos(pi/2 (s+1)/S))`` tokens stay masked, at least one is revealed per step), a linear CFG
  schedule ``1 + (cfg - 1)(N - masked)/N``, DDPM sampling respaced to a few steps, temperature on
  the per-step noise. CMAR's order at generation time is an argument: any (B, N) order, or an
  ``adapt`` callback that re-orders the still-hidden patches after every step.

Departures from the official code, on purpose and stated in Chapter 4: pixel tokens (4x4 patches of
28x28 Fashion-MNIST, d = 16) instead of KL-16 VAE latents; the diffusion head predicts epsilon with a
fixed variance (the posterior variance) instead of also learning it with the VLB term; the predicted
clean token is clipped to the pixel range [-1, 1] when sampling. MAR's own head is one setting away
(``time_freq=256, learn_sigma=True, clip_x0=False``): the paper's configs and the weights converted
from MAR's released checkpoints (:mod:`copkit.mar_weights`) use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .tokens import flip_batch, random_orders
from .train import Recipe, TrainConfig

if TYPE_CHECKING:
    from .dist import Shard

__all__ = [
    "MARConfig",
    "MAR",
    "DiffLoss",
    "AdaLNMLP",
    "cosine_alpha_bar",
    "Diffusion",
    "sample_mask_ratio",
    "masked_count_after",
    "reveal_schedule",
    "cfg_schedule",
    "mar_order",
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
    "generation_orders",
    "generate",
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


def mix_orders(orders: Tensor, random_fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """CMAR's regularisation (Sec. 3.3): each sequence keeps its order, or with probability
    ``random_fraction`` (the paper's 10%) gets a random one."""
    b, n = orders.shape
    swap = torch.rand(b, generator=generator, device=orders.device) < random_fraction
    rnd = random_orders(b, n, generator=generator).to(orders.device)
    return torch.where(swap[:, None], rnd, orders)


# ----------------------------------------------------------------------------- schedules
def sample_mask_ratio(generator: torch.Generator | None = None, minimum: float = 0.7, mode: float = 1.0,
                      scale: float = 0.25) -> float:
    """MAR's training mask ratio: a normal with mean ``mode`` and sd ``scale`` truncated to
    [``minimum``, 1] (inverse-CDF sampling). MAR uses minimum 0.7, mode 1, scale 0.25."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lo, hi = normal.cdf(torch.tensor((minimum - mode) / scale)), normal.cdf(torch.tensor((1.0 - mode) / scale))
    u = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu").cpu()
    return float((mode + scale * normal.icdf(lo + u * (hi - lo))).clamp(minimum, 1.0))


def masked_count_after(step: int, steps: int, n_tokens: int, masked_now: int) -> int:
    """How many tokens stay masked after generation step ``step`` of ``steps`` (MAR's cosine
    schedule): ``floor(N cos(pi/2 (step+1)/steps))``, clamped so that every step reveals at least
    one token and, before the last step, leaves at least one masked. The last step reveals all."""
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
        raise ValueError(f"steps must be between 1 and the number of tokens ({n_tokens}); got {steps}")
    masked, out = n_tokens, []
    for s in range(steps):
        nxt = masked_count_after(s, steps, n_tokens, masked)
        out.append(masked - nxt)
        masked = nxt
    return out


def cfg_schedule(cfg: float, masked: int, n_tokens: int, kind: str = "linear") -> float:
    """MAR's CFG scale at a step that leaves ``masked`` tokens hidden: ``linear`` grows from 1 to
    ``cfg`` as tokens are revealed, ``1 + (cfg - 1)(N - masked)/N``; ``constant`` is ``cfg``."""
    if kind == "linear":
        return 1.0 + (cfg - 1.0) * (n_tokens - masked) / n_tokens
    if kind == "constant":
        return cfg
    raise ValueError(f"unknown CFG schedule {kind!r}; use 'linear' or 'constant'")


# ----------------------------------------------------------------------------- diffusion
def cosine_alpha_bar(t: Tensor | float, steps: int = 1000, s: float = 0.008) -> Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s))."""
    t = torch.as_tensor(t, dtype=torch.float64)
    f = lambda u: torch.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(torch.zeros((), dtype=torch.float64))


class Diffusion:
    """A discrete Gaussian diffusion with the cosine schedule (MAR's DiffLoss uses 1000 steps to
    train and a respaced subset to sample).

    ``betas[t] = min(1 - alpha_bar(t+1)/alpha_bar(t), 0.999)`` for t = 0..T-1 and
    ``alpha_bar_t = prod_{s<=t} (1 - betas[s])``. :meth:`respaced` keeps ``k`` evenly spaced steps
    and recomputes betas from the kept alpha_bars, as improved DDPM's respacing does.
    """

    def __init__(self, betas: Tensor, timesteps: Tensor | None = None) -> None:
        self.betas = betas.double()
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        #: the original step each of these steps stands for (the network is conditioned on it)
        self.timesteps = torch.arange(len(betas)) if timesteps is None else timesteps
        self.posterior_var = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.log_betas = torch.log(self.betas)
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}  # tables copied to a device, by name
        #: log of the posterior variance, its first entry (0) replaced by the second (improved DDPM)
        pv = self.posterior_var
        self.posterior_log_var_clipped = torch.log(torch.cat([pv[1:2], pv[1:]])) if len(pv) > 1 else self.log_betas

    @classmethod
    def cosine(cls, steps: int = 1000) -> "Diffusion":
        t = torch.arange(steps, dtype=torch.float64)
        betas = (1 - cosine_alpha_bar(t + 1, steps) / cosine_alpha_bar(t, steps)).clamp(max=0.999)
        return cls(betas)

    @property
    def steps(self) -> int:
        return len(self.betas)

    def respaced(self, k: int) -> "Diffusion":
        """``k`` evenly spaced steps of this diffusion (k = steps: the same diffusion)."""
        if not 1 <= k <= self.steps:
            raise ValueError(f"respaced steps must be in 1..{self.steps}; got {k}")
        keep = torch.linspace(0, self.steps - 1, k).round().long().unique()
        ab = self.alpha_bar[keep]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return Diffusion(1 - ab / prev, self.timesteps[keep])

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward noising in closed form: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        ab = self._at("alpha_bar", t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def _at(self, table: str, t: Tensor, like: Tensor) -> Tensor:
        """The table named ``table`` (an attribute: ``alpha_bar``, ``betas``, ...) at ``t``, as a column
        in ``like``'s device and dtype, (M,) -> (M, 1). Each table is copied to a device once (a
        host-to-GPU copy on every training step would make the host wait)."""
        key = (table, like.device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, table).to(like.device)
        return self._on_device[key][t].to(like.dtype)[:, None]

    def learned_log_var(self, t: Tensor | int, v: Tensor) -> Tensor:
        """Improved DDPM's learned range (Nichol & Dhariwal 2021, Eq. 15): the network's ``v`` in
        [-1, 1] interpolates the log variance between the posterior's (v = -1) and beta_t's (v = 1):
        log sigma^2 = (v+1)/2 log beta_t + (1-v)/2 log beta~_t. ``t`` (M,) per row, or one step
        index for all rows (sampling: no device copies); ``v`` (M, d)."""
        frac = (v + 1) / 2
        if isinstance(t, int):
            hi, lo = float(self.log_betas[t]), float(self.posterior_log_var_clipped[t])
        else:
            hi, lo = self._at("log_betas", t, v), self._at("posterior_log_var_clipped", t, v)
        return frac * hi + (1 - frac) * lo

    def predict_x0(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        ab = self._at("alpha_bar", t, x)
        return (x - (1 - ab).sqrt() * eps) / ab.sqrt()

    def posterior_mean(self, x0: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The mean of q(x_{t-1} | x_t, x0): sqrt(ab_prev) beta / (1 - ab) x0 + sqrt(1 - beta)(1 - ab_prev) / (1 - ab) x_t."""
        ab, ab_prev, beta = (self._at(name, t, x) for name in ("alpha_bar", "alpha_bar_prev", "betas"))
        return (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x

    def vb_bits(self, x0: Tensor, x: Tensor, t: Tensor, eps: Tensor, v: Tensor) -> Tensor:
        """The variational bound term that trains the learned variance (improved DDPM, L_vlb), per
        row in bits: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0 and the discretised
        Gaussian decoder's negative log-likelihood of x0 for t = 0, averaged over the d channels.
        ``eps`` should be detached (the bound trains only the variance, as in MAR)."""
        x0, x, eps, v = (u.float() for u in (x0, x, eps, v))
        mean = self.posterior_mean(self.predict_x0(x, t, eps), x, t)
        log_var = self.learned_log_var(t, v)
        true_mean = self.posterior_mean(x0, x, t)
        kl = gaussian_kl(true_mean, self._at("posterior_log_var_clipped", t, x), mean, log_var)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
        return torch.where(t == 0, nll.mean(-1), kl.mean(-1)) / math.log(2.0)

    def p_step(self, x: Tensor, i: int, eps: Tensor, noise: Tensor, temperature: float = 1.0,
               clip: float | None = 1.0, v: Tensor | None = None) -> Tensor:
        """One DDPM reverse step from step index ``i`` given the predicted noise: the posterior mean
        of q(x_{i-1} | x_i, x0_hat) plus temperature-scaled noise with the posterior variance, or
        with the learned variance (:meth:`learned_log_var`) when the network's ``v`` is given."""
        ab, ab_prev, beta = (float(v_[i]) for v_ in (self.alpha_bar, self.alpha_bar_prev, self.betas))
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        if i == 0:
            return mean
        if v is None:
            return mean + temperature * math.sqrt(float(self.posterior_var[i])) * noise
        return mean + temperature * torch.exp(0.5 * self.learned_log_var(i, v.to(x.dtype))) * noise


def gaussian_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) elementwise, in nats."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 255) -> Tensor:
    """log P(x) of data in [-1, 1] quantised to ``bins`` + 1 levels under N(mean, exp(log_scale)^2):
    the Gaussian mass of x's bin (width 2/bins), the outermost bins reaching to +-infinity (Ho et
    al. 2020, Sec. 3.3). The normal CDF is the tanh approximation improved DDPM uses."""
    def cdf(u: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))

    inv_std = torch.exp(-log_scale)
    upper, lower = cdf(inv_std * (x - mean + 1.0 / bins)), cdf(inv_std * (x - mean - 1.0 / bins))
    log = lambda p: torch.log(p.clamp(min=1e-12))  # noqa: E731
    return torch.where(x < -0.999, log(upper), torch.where(x > 0.999, log(1.0 - lower), log(upper - lower)))


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class _ResBlock(nn.Module):
    """LayerNorm, AdaLN shift/scale from the condition, Linear-SiLU-Linear, gated residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class AdaLNMLP(nn.Module):
    """MAR's denoiser: a residual MLP per token, every block modulated (AdaLN) by the sum of the
    timestep embedding and the projected condition z. The AdaLN layers and the output are
    zero-initialised, so each block starts as the identity and the first prediction is 0.

    ``time_freq``: the size of the sinusoidal timestep embedding (MAR: 256; None: ``width``);
    ``out_dim``: ``token_dim``, or twice it when the variance is learned too (MAR)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, time_freq: int | None = None,
                 out_dim: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.time_freq = time_freq or width
        self.inp = nn.Linear(token_dim, width)
        self.time = nn.Sequential(nn.Linear(self.time_freq, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(_ResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, out_dim or token_dim)
        for m in [*(b.ada[-1] for b in self.blocks), self.final_ada[-1], self.out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        return self.denoise(x, self.embed_time(t), self.cond(z))

    def embed_time(self, t: Tensor) -> Tensor:
        """The timestep embedding (B,) -> (B, width): sinusoids, then Linear-SiLU-Linear."""
        return self.time(timestep_embedding(t, self.time_freq))

    def denoise(self, x: Tensor, temb: Tensor, c: Tensor) -> Tensor:
        """The forward from an embedded timestep and a projected condition (sampling computes
        the condition once per token and the timestep once per step)."""
        y = temb + c
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)


class DiffLoss(nn.Module):
    """The per-token diffusion loss and sampler of MAR: the denoiser predicts the noise of
    x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps from (x_t, t, z); training draws t
    uniformly per token and takes the mean squared error; sampling runs DDPM respaced.

    With ``learn_sigma`` (as MAR) the denoiser also outputs ``v`` for the variance of each reverse
    step (:meth:`Diffusion.learned_log_var`), trained by the variational bound
    (:meth:`Diffusion.vb_bits`) added to the squared error; sampling then uses that variance."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, train_steps: int = 1000,
                 time_freq: int | None = None, learn_sigma: bool = False) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.learn_sigma = learn_sigma
        self.net = AdaLNMLP(token_dim, cond_dim, width, depth, time_freq, 2 * token_dim if learn_sigma else token_dim)
        self.diffusion = Diffusion.cosine(train_steps)

    def forward(self, target: Tensor, z: Tensor, generator: torch.Generator | None = None,
                t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """The loss of each row (target (M, d), condition z (M, c)) -> (M,); the timesteps ``t`` (M,)
        and the noise (M, d) are drawn from ``generator`` unless given."""
        if t is None:
            t = torch.randint(0, self.diffusion.steps, (len(target),), generator=generator, device=target.device)
        if noise is None:
            noise = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        x_t = self.diffusion.q_sample(target, t, noise)
        out = self.net(x_t, t, z)
        if not self.learn_sigma:
            return ((out - noise) ** 2).mean(dim=-1)
        eps, v = out.split(self.token_dim, dim=-1)
        return ((eps - noise) ** 2).mean(dim=-1) + self.diffusion.vb_bits(target, x_t, t, eps.detach(), v)

    @torch.no_grad()
    def sample(self, z: Tensor, steps: int = 100, temperature: float = 1.0, cfg: float = 1.0,
               z_uncond: Tensor | None = None, generator: torch.Generator | None = None,
               clip: float | None = 1.0) -> Tensor:
        """Tokens (M, d) for the conditions z (M, c). With ``z_uncond`` the noise prediction is
        guided, eps = eps_u + cfg (eps_c - eps_u) (cfg = 1 is the conditional model)."""
        diff = self.diffusion.respaced(steps)
        x = torch.randn(len(z), self.token_dim, generator=generator, device=z.device, dtype=z.dtype)
        guided = z_uncond is not None and cfg != 1.0
        c = self.net.cond(torch.cat([z, z_uncond]) if guided else z)
        d = self.token_dim
        for i in reversed(range(diff.steps)):
            temb = self.net.embed_time(torch.full((1,), int(diff.timesteps[i]), device=z.device))
            if guided:
                cond, uncond = self.net.denoise(torch.cat([x, x]), temb, c).chunk(2)
                out = cond  # the variance is the conditional branch's, as in MAR
                eps = uncond[:, :d] + cfg * (cond[:, :d] - uncond[:, :d])
            else:
                out = self.net.denoise(x, temb, c)
                eps = out[:, :d]
            v = out[:, d:] if self.learn_sigma else None
            noise = torch.randn(x.shape, generator=generator, device=z.device, dtype=z.dtype)
            x = diff.p_step(x, i, eps, noise, temperature, clip, v)
        return x


# ----------------------------------------------------------------------------------- MAR
@dataclass(frozen=True)
class MARConfig:
    """A small MAR on a grid of pixel tokens (MAR-B: width 768, 12 + 12 blocks, buffer 64)."""

    grid: tuple[int, int] = (7, 7)
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
    clip_x0: bool = field(default=True, metadata={"hash_if_set": True})  #: clip x0 to [-1, 1] when sampling

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class MAR(nn.Module):
    """MAR's bidirectional encoder-decoder (timm ``Block`` modules) with a class-embedding buffer, a learned
    fake class for CFG, and the per-token :class:`DiffLoss` head."""

    def __init__(self, cfg: MARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, w = cfg.n_tokens, cfg.width
        self.class_emb = nn.Embedding(cfg.n_classes, w)
        self.fake_latent = nn.Parameter(torch.zeros(1, w))
        self.z_proj = nn.Linear(cfg.token_dim, w)
        self.z_proj_ln = nn.LayerNorm(w, eps=1e-6)
        self.enc_pos = nn.Parameter(torch.zeros(1, cfg.buffer + n, w))
        self.encoder = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio, qkv_bias=True, proj_drop=cfg.dropout,
                                           attn_drop=cfg.dropout) for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(w, eps=1e-6)
        self.dec_embed = nn.Linear(w, w)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.dec_pos = nn.Parameter(torch.zeros(1, cfg.buffer + n, w))
        self.decoder = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio, qkv_bias=True, proj_drop=cfg.dropout,
                                           attn_drop=cfg.dropout) for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(w, eps=1e-6)
        self.diff_pos = nn.Parameter(torch.zeros(1, n, w))
        self.diffloss = DiffLoss(cfg.token_dim, w, cfg.head_width, cfg.head_depth, cfg.diffusion_steps,
                                 cfg.time_freq, cfg.learn_sigma)
        for p in (self.class_emb.weight, self.fake_latent, self.mask_token, self.enc_pos, self.dec_pos, self.diff_pos):
            nn.init.normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Matrices AdamW does not decay (:func:`copkit.train.weight_decay_groups`), as MAR trains:
        the class embedding, the position embeddings and the whole diffusion head."""
        return {n for n, _ in self.named_parameters()
                if n.startswith(("diffloss.", "class_emb.", "enc_pos", "dec_pos", "diff_pos"))}

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
        x = self.z_proj(torch.gather(tokens, 1, visible[..., None].expand(-1, -1, tokens.shape[-1])))
        x = x + torch.gather(self.enc_pos[:, nb:].expand(b, n, w), 1, idx)
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

    def loss(self, tokens: Tensor, labels: Tensor, orders: Tensor, generator: torch.Generator | None = None,
             mask_ratio: float | None = None, shard: Shard | None = None) -> Tensor:
        """MAR's training loss on a batch: tokens (B, N, d), labels (B,), orders (B, N) in MAR's
        convention (the head is masked). ``mask_ratio`` defaults to a draw of
        :func:`sample_mask_ratio` from [``mask_ratio_min``, 1], one per (global) batch.

        With a ``shard`` (:class:`copkit.dist.Shard`) the inputs are this process's rows of a
        global batch; the label drops, the timesteps and the noise are drawn for the whole global
        batch and cut, as one process would draw them."""
        from .dist import Shard

        b, n, d = tokens.shape
        shard = shard or Shard.whole(b)
        if orders.shape != (b, n) or shard.size != b:
            raise ValueError(f"orders must be (batch, tokens) = {(b, n)} and the shard {b} rows; got "
                             f"{tuple(orders.shape)} and {shard.size}")
        if mask_ratio is None:
            from .train import host_generator

            mask_ratio = sample_mask_ratio(host_generator(generator), self.cfg.mask_ratio_min)
        r = mask_ratio
        m = min(n, max(1, math.ceil(n * r)))
        masked, visible = orders[:, :m], orders[:, m:]
        drop = shard.cut(torch.rand(shard.total, generator=generator, device=tokens.device)) < self.cfg.label_drop
        z = self.forward_z(tokens, self.condition(labels, drop), visible)
        k = self.cfg.diffusion_batch_mul
        zm = torch.gather(z, 1, masked[..., None].expand(-1, -1, z.shape[-1])).reshape(b * m, -1)
        xm = torch.gather(tokens, 1, masked[..., None].expand(-1, -1, d)).reshape(b * m, -1)
        # rows are (copy j, image i, masked token t): drawn for every image of the global batch
        t = torch.randint(0, self.diffloss.diffusion.steps, (k, shard.total, m), generator=generator,
                          device=tokens.device)
        noise = torch.randn((k, shard.total, m, d), generator=generator, device=tokens.device, dtype=tokens.dtype)
        t, noise = t[:, shard.start:shard.stop].reshape(-1), noise[:, shard.start:shard.stop].reshape(-1, d)
        return self.diffloss(xm.repeat(k, 1), zm.repeat(k, 1), generator, t=t, noise=noise).mean()

    @torch.no_grad()
    def sample(self, labels: Tensor, orders: Tensor, steps: int = 16, cfg: float = 1.0, cfg_kind: str = "linear",
               temperature: float = 1.0, diffusion_steps: int = 100, generator: torch.Generator | None = None,
               adapt: Callable[[Tensor, Tensor, int], Tensor] | None = None, draft_steps: int = 10,
               callback: Callable[[int, Tensor, Tensor, int], None] | None = None) -> Tensor:
        """Generate tokens (B, N, d) for ``labels`` along ``orders`` (MAR's convention: the tail is
        generated first).

        After step s exactly the last ``N - masked(s)`` entries of the order are revealed
        (:func:`masked_count_after`). ``cfg`` != 1 guides with the fake class on a doubled batch,
        the scale following ``cfg_kind``.

        ``adapt(canvas, orders, masked)``, when given, is asked before every step for new orders:
        the canvas holds the revealed tokens and a quick draft (``draft_steps`` diffusion steps) of
        the hidden ones, and the callback may reorder only the hidden head ``orders[:, :masked]``
        (:func:`adaptive_collapse` re-ranks it with CoMAE). ``callback(step, tokens, orders,
        masked)`` sees the state after every step.
        """
        b, n = orders.shape
        d = self.cfg.token_dim
        tokens = torch.zeros(b, n, d, device=orders.device)
        cond = self.condition(labels)
        uncond = self.fake_latent.expand_as(cond)
        guided = cfg != 1.0
        clip = 1.0 if self.cfg.clip_x0 else None

        def pick(t: Tensor, index: Tensor) -> Tensor:
            return torch.gather(t, 1, index[..., None].expand(-1, -1, t.shape[-1])).reshape(-1, t.shape[-1])

        masked = n
        for s in range(steps):
            nxt = masked_count_after(s, steps, n, masked)
            visible = orders[:, masked:]
            if guided:
                z, zu = self.forward_z(torch.cat([tokens, tokens]), torch.cat([cond, uncond]),
                                       torch.cat([visible, visible])).chunk(2)
            else:
                z, zu = self.forward_z(tokens, cond, visible), None
            scale = cfg_schedule(cfg, nxt, n, cfg_kind) if guided else 1.0
            if adapt is not None and masked > 1:
                hidden = orders[:, :masked]
                draft = self.diffloss.sample(pick(z, hidden), draft_steps, temperature, scale,
                                             pick(zu, hidden) if guided else None, generator, clip)
                canvas = tokens.scatter(1, hidden[..., None].expand(-1, -1, d), draft.reshape(b, masked, d))
                orders = adapt(canvas, orders, masked)
                if not torch.equal(orders[:, masked:], visible):
                    raise ValueError("adapt must keep the revealed tail of the orders in place")
            new = orders[:, nxt:masked]  # revealed at this step
            out = self.diffloss.sample(pick(z, new), diffusion_steps, temperature, scale,
                                       pick(zu, new) if guided else None, generator, clip)
            tokens = tokens.scatter(1, new[..., None].expand(-1, -1, d), out.reshape(b, masked - nxt, d))
            masked = nxt
            if callback is not None:
                callback(s, tokens, orders, masked)
        return tokens


def adaptive_collapse(comae: nn.Module, damping: float = 0.85) -> Callable[[Tensor, Tensor, int], Tensor]:
    """CMAR's order decided while generating (option (c) of Chapter 4): before each step CoMAE
    ranks the patches of the current canvas (revealed tokens plus a draft of the hidden ones) with
    PageRank, and the hidden head of the MAR order is sorted so that the best-ranked hidden patch
    sits at its end, i.e. is revealed next. The revealed tail is left as it is."""
    from .rank import collapse_order, ranks

    def adapt(canvas: Tensor, orders: Tensor, masked: int) -> Tensor:
        r = ranks(collapse_order(comae.masks(canvas), damping=damping))  # 0 = best
        hidden = orders[:, :masked]
        worst_first = torch.gather(r, 1, hidden).argsort(dim=1, descending=True)
        return torch.cat([torch.gather(hidden, 1, worst_first), orders[:, masked:]], dim=1)

    return adapt


# ------------------------------------------------------------------------ training (copkit.train)
ORDER_KINDS = ("random", "descending", "ascending")


def training_orders(kind: str, collapse: Tensor | None, batch: int, n_tokens: int, random_fraction: float,
                    generator: torch.Generator | None = None) -> Tensor:
    """The MAR orders of one training batch: ``random`` (MAR), or the images' collapse orders
    ``descending`` (CMAR: best patches generated first) or ``ascending`` (Table 4's ablation), a
    ``random_fraction`` of the sequences replaced by random orders (CMAR's 10%)."""
    if kind == "random":
        return random_orders(batch, n_tokens, generator=generator)
    if kind not in ORDER_KINDS:
        raise ValueError(f"unknown order kind {kind!r}; use one of {ORDER_KINDS}")
    if collapse is None:
        raise ValueError(f"order kind {kind!r} needs the images' collapse orders")
    return mix_orders(mar_order(collapse, descending=kind == "descending"), random_fraction, generator)


def mar_step_fn(model: MAR, images: Tensor, labels: Tensor, batch_size: int, seed: int, kind: str = "random",
                collapse: Tensor | None = None, random_fraction: float = 0.1, flip: bool = True,
                tokenizer: Callable[[Tensor], Tensor] | None = None, stride: int = 4):
    """One training step of MAR / CMAR for :func:`copkit.train.train`: a batch of images (n, C, H, W),
    a random horizontal flip with the collapse orders flipped alongside, tokens (pixel patches
    p = 4 unless a ``tokenizer`` (images -> (B, N, d)) with token ``stride`` in pixels is given),
    the batch's orders (:func:`training_orders`) and :meth:`MAR.loss`.

    ``images`` is anything indexed by a tensor of indices (a tensor, or images read from disk:
    :class:`copkit.imagefolder.ImageFolderImages`). Under torchrun each process reads and computes only
    its :func:`copkit.dist.shard` of the batch; every draw is made for the global batch."""
    from .dist import shard as process_shard
    from .tokens import patchify
    from .train import batch_indices, take

    device = next(model.parameters()).device
    encode = tokenizer or (lambda x: patchify(x, 4))
    part = process_shard(batch_size)

    def step_fn(step: int, gen: torch.Generator):
        idx = part.cut(batch_indices(len(images), batch_size, step, seed))
        x, y = take(images, idx, device), take(labels, idx, device)
        o = take(collapse, idx, device) if collapse is not None else None
        flips = None
        if flip:
            flips = part.cut(torch.rand(part.total, generator=gen, device=gen.device) < 0.5)
            x, o = flip_batch(x, o, flips, stride)
        orders = part.cut(training_orders(kind, _global(o, part), part.total, model.cfg.n_tokens, random_fraction, gen))
        loss = model.loss(encode(x), y, orders, gen, shard=part)
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
    ``"ascending"``: Table 4's ablation) with the images' collapse orders (n, N) and CMAR's
    ``random_fraction``; ``tokenizer`` (images -> (B, N, d)) and its token ``stride`` in pixels
    (None: pixel patches, p = 4). ``kind`` and ``random_fraction`` are part of the run's hash."""

    images: Any
    labels: Tensor
    kind: str = "random"
    collapse: Tensor | None = None
    random_fraction: float = 0.1
    tokenizer: Callable[[Tensor], Tensor] | None = None
    stride: int = 4


def _step(model: MAR, cfg: MARConfig, tc, data: MARData):
    return mar_step_fn(model, data.images, data.labels, tc.batch_size, tc.seed, data.kind, data.collapse,
                       data.random_fraction, tokenizer=data.tokenizer, stride=data.stride)


#: How :func:`copkit.train.fit` trains MAR and CMAR (:func:`mar_step_fn`, one optimiser "mar"), from
#: scratch or fine-tuned (``fit(..., init=(run hash, state dict))``); runs in
#: ``<data_dir>/runs/mar-<hash8>``, named also by the order kind, the random fraction of the
#: collapse kinds and the run fine-tuned from.
#:
#: :meta hide-value:
RECIPE = Recipe(name="mar", module="mar", build=lambda cfg, data: MAR(cfg), step=_step,
                hashed=lambda data: {"orders": data.kind, "init": None,
                                     "random_fraction": data.random_fraction if data.kind != "random" else None})

#: The MAR trainings of a profile (:func:`from_profile`), MAR from scratch, MAR -> CMAR fine-tuning,
#: CMAR from scratch (MAR's recipe with ``scratch_steps``).
PHASES = ("mar", "finetune", "scratch")


def from_profile(sizes, seed: int, *, phase: str = "mar") -> tuple[MARConfig, "TrainConfig"]:
    """The MAR configuration and the training configuration of one ``phase`` (:data:`PHASES`) of a
    profile's :class:`copkit.profiles.CmarSizes`, for one seed. Every chapter and
    ``python -m copkit config train-cmar`` take them from here."""
    if phase not in PHASES:
        raise ValueError(f"unknown MAR phase {phase!r}; use one of {', '.join(PHASES)}")
    cfg = MARConfig(width=sizes.width, enc_depth=sizes.enc_depth, dec_depth=sizes.dec_depth, heads=sizes.heads,
                    buffer=sizes.buffer, head_width=sizes.head_width, head_depth=sizes.head_depth,
                    diffusion_batch_mul=sizes.diffusion_batch_mul, mask_ratio_min=sizes.mask_ratio_min)
    if phase in ("mar", "scratch"):
        tc = TrainConfig(steps=sizes.mar_steps if phase == "mar" else sizes.scratch_steps, batch_size=sizes.batch_size,
                         lr=sizes.lr, warmup_steps=sizes.warmup_steps, ema_decay=sizes.ema_decay, weight_decay=0.02,
                         grad_clip=3.0, seed=seed, log_every=10, ckpt_every=200,
                         precision=sizes.precision, compile=sizes.compile)
    else:  # the paper's recipe: linear warm-up over the first 10%, then cosine to 0
        tc = TrainConfig(steps=sizes.finetune_steps, batch_size=sizes.batch_size, lr=sizes.finetune_lr,
                         warmup_steps=max(1, sizes.finetune_steps // 10), ema_decay=sizes.ema_decay,
                         weight_decay=0.02, grad_clip=3.0, seed=seed, log_every=10, ckpt_every=200,
                         precision=sizes.precision, compile=sizes.compile)
    return cfg, tc


# --------------------------------------------------------------------------------- generation
ORDER_SOURCES = ("random", "class-mean", "class-image")


def generation_orders(source: str, labels: Tensor, generator: torch.Generator, n_tokens: int = 49,
                      collapse: Tensor | None = None, collapse_labels: Tensor | None = None,
                      descending: bool = True) -> Tensor:
    """The MAR orders to generate ``labels`` with, when no image exists yet (Chapter 4 compares them):

    - ``random``: MAR's random orders;
    - ``class-mean``: the class's mean collapse order (:func:`copkit.rank.class_mean_order`);
    - ``class-image``: the collapse order of a random training image of the class.

    Collapse orders enter reversed for ``descending`` (CMAR, :func:`mar_order`). The adaptive order
    is :func:`adaptive_collapse`, passed to :meth:`MAR.sample`.
    """
    from .rank import class_mean_order

    if source == "random":
        return random_orders(len(labels), n_tokens, generator=generator).to(labels.device)
    if source not in ORDER_SOURCES:
        raise ValueError(f"unknown order source {source!r}; use one of {ORDER_SOURCES}")
    if collapse is None or collapse_labels is None:
        raise ValueError(f"order source {source!r} needs the training images' collapse orders and labels")
    if source == "class-mean":
        chosen = class_mean_order(collapse, collapse_labels, int(collapse_labels.max()) + 1)[labels.cpu()]
    else:
        chosen = torch.empty(len(labels), collapse.shape[1], dtype=torch.long)
        for c in labels.unique().tolist():
            pool = (collapse_labels == c).nonzero().flatten()
            where = (labels == c).nonzero().flatten().cpu()
            pick = torch.randint(0, len(pool), (len(where),), generator=torch.Generator().manual_seed(
                int(torch.randint(0, 2**31, (), generator=generator, device=generator.device))))
            chosen[where] = collapse[pool[pick]]
    return mar_order(chosen, descending).to(labels.device)


@torch.no_grad()
def generate(model: MAR, labels: Tensor, orders: Tensor | Callable[[Tensor, torch.Generator], Tensor], seed: int,
             steps: int, diffusion_steps: int, cfg: float = 1.0, temperature: float = 1.0, batch_size: int = 500,
             adapt: Callable | None = None, progress: bool = True, desc: str = "sampling",
             decode: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Images (n, 1, 28, 28) in [-1, 1] for ``labels`` (n,), generated in batches from one seed.
    ``orders`` is a (n, N) tensor or a function ``(batch labels, generator) -> orders``.
    ``decode`` turns tokens into images (default: 4 x 4 pixel patches of 28 x 28 images; the KL-16
    VAE's decoder for the paper's setting, :meth:`copkit.tokenizer.KLTokenizer.decode`)."""
    from tqdm import tqdm

    from .tokens import unpatchify

    decode = decode or (lambda t: unpatchify(t, 4, (1, 28, 28)))

    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for s in tqdm(range(0, len(labels), batch_size), desc=desc, disable=not progress, mininterval=5.0, ncols=100):
        y = labels[s:s + batch_size].to(device)
        o = orders(y, g) if callable(orders) else orders[s:s + batch_size].to(device)
        tokens = model.sample(y, o, steps, cfg, temperature=temperature, diffusion_steps=diffusion_steps,
                              generator=g, adapt=adapt)
        out.append(decode(tokens).clamp(-1, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def hidden_uncertainty(model: MAR, tokens: Tensor, labels: Tensor, orders: Tensor, reveal: list[int], draws: int,
                       generator: torch.Generator, diffusion_steps: int) -> Tensor:
    """How uncertain the still-hidden tokens are as an image is revealed along ``orders`` (MAR's
    convention): for each count k in ``reveal``, the last k entries of the order are given (the
    real tokens), every hidden token is drawn ``draws`` times from the model, and the summed
    per-pixel variance over the draws of all hidden tokens is returned, (B, len(reveal)).
    Fig. 1's claim in numbers: along a good order this total falls fast."""
    b, n, d = tokens.shape
    out = torch.zeros(b, len(reveal))
    cond = model.condition(labels)
    for j, k in enumerate(reveal):
        if k >= n:
            continue
        visible, hidden = orders[:, n - k:], orders[:, :n - k]
        z = model.forward_z(tokens, cond, visible)
        zh = torch.gather(z, 1, hidden[..., None].expand(-1, -1, z.shape[-1])).reshape(-1, z.shape[-1])
        x = model.diffloss.sample(zh.repeat(draws, 1), diffusion_steps, generator=generator)
        out[:, j] = x.reshape(draws, b, n - k, d).var(dim=0).sum(dim=(1, 2)).cpu()
    return out
