r"""MAR's per-token diffusion head: the timestep embedding, the AdaLN residual MLP that predicts the
noise, and :class:`DiffLoss`, the loss and sampler MAR puts on top of its decoder (MAR's
``models/diffloss.py``).

A token :math:`x` (:math:`d` numbers) is modelled given the decoder's output :math:`z` at its
position: training noises :math:`x` to

.. math::

    x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1 - \bar\alpha_t}\,\epsilon

at a random :math:`t` and regresses :math:`\epsilon`; sampling runs the reverse diffusion of
:mod:`copkit.diffusion`, respaced to a few steps, with classifier-free guidance on the predicted
noise and a temperature on the per-step noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .diffusion import Diffusion

__all__ = ["timestep_embedding", "AdaLNMLP", "DiffLoss"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, device=t.device, dtype=torch.float32) / half)
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

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int,
                 time_freq: int | None = None, out_dim: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.time_freq = time_freq or width
        self.inp = nn.Linear(token_dim, width)
        self.time = nn.Sequential(nn.Linear(self.time_freq, width), nn.SiLU(),
                                  nn.Linear(width, width))
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
    r"""The per-token diffusion loss and sampler of MAR: the denoiser predicts the noise
    :math:`\epsilon` of :math:`x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1 - \bar\alpha_t}\,\epsilon`
    from :math:`(x_t, t, z)`; training draws :math:`t` uniformly per token and takes the mean
    squared error; sampling runs DDPM respaced.

    With ``learn_sigma`` (as MAR) the denoiser also outputs ``v`` for the variance of each reverse
    step (:meth:`copkit.diffusion.Diffusion.learned_log_var`), trained by the variational bound
    (:meth:`copkit.diffusion.Diffusion.vb_bits`) added to the squared error; sampling then uses that
    variance."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int,
                 train_steps: int = 1000, time_freq: int | None = None,
                 learn_sigma: bool = False) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.learn_sigma = learn_sigma
        self.net = AdaLNMLP(token_dim, cond_dim, width, depth, time_freq,
                            2 * token_dim if learn_sigma else token_dim)
        self.diffusion = Diffusion.cosine(train_steps)

    def forward(self, target: Tensor, z: Tensor, generator: torch.Generator | None = None,
                t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """The loss of each row (target (M, d), condition z (M, c)) -> (M,); the timesteps ``t``
        (M,) and the noise (M, d) are drawn from ``generator`` unless given."""
        if t is None:
            t = torch.randint(0, self.diffusion.steps, (len(target),), generator=generator,
                              device=target.device)
        if noise is None:
            noise = torch.randn(target.shape, generator=generator, device=target.device,
                                dtype=target.dtype)
        x_t = self.diffusion.q_sample(target, t, noise)
        out = self.net(x_t, t, z)
        if not self.learn_sigma:
            return ((out - noise) ** 2).mean(dim=-1)
        eps, v = out.split(self.token_dim, dim=-1)
        return (((eps - noise) ** 2).mean(dim=-1)
                + self.diffusion.vb_bits(target, x_t, t, eps.detach(), v))

    @torch.no_grad()
    def sample(self, z: Tensor, steps: int = 100, temperature: float = 1.0, cfg_scale: float = 1.0,
               z_uncond: Tensor | None = None, generator: torch.Generator | None = None,
               clip: float | None = 1.0, noise: Tensor | None = None) -> Tensor:
        r"""Tokens (M, d) for the conditions z (M, c). With ``z_uncond`` the noise prediction is
        guided, :math:`\epsilon = \epsilon_u + s\,(\epsilon_c - \epsilon_u)` with :math:`s` =
        ``cfg_scale`` (1 is the conditional model).

        The starting point and each step's noise are drawn from ``generator``, or taken from
        ``noise`` (K + 1, M, d) when given, K being the respaced steps (:meth:`noise_draws`)."""
        diff = self.diffusion.respaced(steps)
        if noise is not None and noise.shape != (diff.steps + 1, len(z), self.token_dim):
            raise ValueError(f"noise must be {(diff.steps + 1, len(z), self.token_dim)}, got "
                             f"{tuple(noise.shape)}")
        draws = iter(noise) if noise is not None else None
        x = next(draws) if draws else torch.randn(len(z), self.token_dim, generator=generator,
                                                  device=z.device, dtype=z.dtype)
        guided = z_uncond is not None and cfg_scale != 1.0
        c = self.net.cond(torch.cat([z, z_uncond]) if guided else z)
        d = self.token_dim
        for i in reversed(range(diff.steps)):
            temb = self.net.embed_time(torch.full((1,), int(diff.timesteps[i]), device=z.device))
            if guided:
                cond, uncond = self.net.denoise(torch.cat([x, x]), temb, c).chunk(2)
                out = cond  # the variance is the conditional branch's, as in MAR
                eps = uncond[:, :d] + cfg_scale * (cond[:, :d] - uncond[:, :d])
            else:
                out = self.net.denoise(x, temb, c)
                eps = out[:, :d]
            v = out[:, d:] if self.learn_sigma else None
            eta = (next(draws) if draws
                   else torch.randn(x.shape, generator=generator, device=z.device, dtype=z.dtype))
            x = diff.p_step(x, i, eps, eta, temperature, clip, v)
        return x

    def noise_draws(self, steps: int) -> int:
        """How many (M, d) noise draws :meth:`sample` with ``steps`` makes: the respaced steps +
        1."""
        return self.diffusion.respaced(steps).steps + 1


