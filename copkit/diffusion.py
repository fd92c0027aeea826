r"""Gaussian diffusion for MAR's per-token head: the noise schedule, forward noising, the posterior,
respacing, and the variational-bound terms that train a learned variance.

This is what MAR keeps in its ``diffusion/`` package (taken from improved DDPM, Nichol & Dhariwal
2021), reduced to what a per-token head needs:

- :func:`cosine_alpha_bar`: the cosine schedule :math:`\bar\alpha(t)`;
- :class:`Diffusion`: betas and their tables in float64, :meth:`~Diffusion.q_sample` (forward
  noising in closed form), :meth:`~Diffusion.posterior_mean` and the posterior variance,
  :meth:`~Diffusion.respaced` (a few spaced steps for sampling, :func:`spaced_steps`),
  :meth:`~Diffusion.learned_log_var` (improved DDPM's learned range), :meth:`~Diffusion.vb_bits`
  (the :math:`L_\text{vlb}` term) and :meth:`~Diffusion.p_step` (one reverse step);
- :func:`gaussian_kl` and :func:`discretized_gaussian_log_likelihood`, the two pieces of
  :math:`L_\text{vlb}`.

The network that predicts the noise, and the loss built on it, are in :mod:`copkit.diffloss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cosine_alpha_bar", "spaced_steps", "Diffusion", "gaussian_kl",
           "discretized_gaussian_log_likelihood"]


def cosine_alpha_bar(t: Tensor | float, steps: int = 1000, s: float = 0.008) -> Tensor:
    r"""The cosine schedule (Nichol & Dhariwal 2021): :math:`\bar\alpha(t) = f(t)/f(0)` with
    :math:`f(t) = \cos^2\left(\frac{\pi}{2} \cdot \frac{t/T + s}{1 + s}\right)`, :math:`T` =
    ``steps``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    f = lambda u: torch.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(torch.zeros((), dtype=torch.float64))


def spaced_steps(steps: int, k: int) -> list[int]:
    """The ``k`` of ``steps`` steps MAR samples with: improved DDPM's
    ``space_timesteps(steps, "k")`` (one section), which MAR's
    ``create_diffusion(timestep_respacing="k")`` calls. The stride (steps - 1)/(k - 1) is
    accumulated in floating point from 0 and each running sum rounded with Python's ``round`` (half
    to even); k = 1 keeps step 0. Ascending, without repeats.

    This is not ``linspace(0, steps - 1, k).round()``: the accumulated sum drifts from i * stride,
    which decides the exact halves (steps = 1000, k = 21: 499.5 becomes 499 here, 500 by linspace).

    >>> spaced_steps(1000, 5)
    [0, 250, 500, 749, 999]
    """
    if not 1 <= k <= steps:
        raise ValueError(f"respaced steps must be in 1..{steps}; got {k}")
    stride = (steps - 1) / (k - 1) if k > 1 else 1
    at, keep = 0.0, set()
    for _ in range(k):
        keep.add(round(at))
        at += stride
    return sorted(keep)


class Diffusion:
    r"""A discrete Gaussian diffusion with the cosine schedule (MAR's DiffLoss uses 1000 steps to
    train and a respaced subset to sample).

    ``betas`` holds :math:`\beta_t = \min(1 - \bar\alpha(t+1)/\bar\alpha(t),\ 0.999)` for
    :math:`t = 0, \dots, T-1`, and ``alpha_bar`` holds
    :math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)`. :meth:`respaced` keeps the ``k`` steps
    MAR keeps (:func:`spaced_steps`) and recomputes the betas from the kept :math:`\bar\alpha_t`,
    as improved DDPM's ``SpacedDiffusion`` does.
    """

    def __init__(self, betas: Tensor, timesteps: Tensor | None = None) -> None:
        self.betas = betas.double()
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        #: the original step each of these steps stands for (the network is conditioned on it)
        self.timesteps = torch.arange(len(betas)) if timesteps is None else timesteps
        self.posterior_var = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        # Every coefficient the steps use is computed here in float64 and cast only when applied, as
        # MAR's (improved DDPM's) tables are: 1 - alpha_bar in float32 loses digits near t = 0.
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1 - self.alpha_bar).sqrt()
        self.sqrt_recip_alpha_bar = (1 / self.alpha_bar).sqrt()
        self.sqrt_recipm1_alpha_bar = (1 / self.alpha_bar - 1).sqrt()
        self.posterior_coef_x0 = self.alpha_bar_prev.sqrt() * self.betas / (1 - self.alpha_bar)
        self.posterior_coef_xt = ((1 - self.betas).sqrt() * (1 - self.alpha_bar_prev)
                                  / (1 - self.alpha_bar))
        self.log_betas = torch.log(self.betas)
        # tables copied to a device, by name
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}
        #: log of the posterior variance, its first entry (0) replaced by the second (improved DDPM)
        pv = self.posterior_var
        self.posterior_log_var_clipped = (torch.log(torch.cat([pv[1:2], pv[1:]])) if len(pv) > 1
                                          else self.log_betas)

    @classmethod
    def cosine(cls, steps: int = 1000) -> "Diffusion":
        t = torch.arange(steps, dtype=torch.float64)
        betas = (1 - cosine_alpha_bar(t + 1, steps) / cosine_alpha_bar(t, steps)).clamp(max=0.999)
        return cls(betas)

    @property
    def steps(self) -> int:
        return len(self.betas)

    def respaced(self, k: int) -> "Diffusion":
        r"""``k`` steps of this diffusion, those MAR keeps (:func:`spaced_steps`; k = steps: the
        same diffusion). Each kept step's :math:`\beta` is :math:`1 - \bar\alpha / \bar\alpha'`,
        with :math:`\bar\alpha'` that of the previous kept step."""
        keep = torch.tensor(spaced_steps(self.steps, k))
        ab = self.alpha_bar[keep]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return Diffusion(1 - ab / prev, self.timesteps[keep])

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        r"""Forward noising in closed form:
        :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon`."""
        return (self._at("sqrt_alpha_bar", t, x0) * x0
                + self._at("sqrt_one_minus_alpha_bar", t, x0) * noise)

    def _at(self, table: str, t: Tensor, like: Tensor) -> Tensor:
        """The table named ``table`` (an attribute: ``alpha_bar``, ``betas``, ...) at ``t``, as a
        column in ``like``'s device and dtype, (M,) -> (M, 1). Each table is copied to a device once
        (a host-to-GPU copy on every training step would make the host wait)."""
        key = (table, like.device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, table).to(like.device)
        return self._on_device[key][t].to(like.dtype)[:, None]

    def learned_log_var(self, t: Tensor | int, v: Tensor) -> Tensor:
        r"""Improved DDPM's learned range (Nichol & Dhariwal 2021, Eq. 15): the network's ``v`` in
        [-1, 1] interpolates the log variance between the posterior's (:math:`v = -1`) and
        :math:`\beta_t`'s (:math:`v = 1`),
        :math:`\log\sigma^2 = \frac{v+1}{2} \log\beta_t + \frac{1-v}{2} \log\tilde\beta_t`. ``t``
        (M,) per row, or one step index for all rows (sampling: no device copies); ``v`` (M, d)."""
        frac = (v + 1) / 2
        if isinstance(t, int):
            hi, lo = float(self.log_betas[t]), float(self.posterior_log_var_clipped[t])
        else:
            hi, lo = self._at("log_betas", t, v), self._at("posterior_log_var_clipped", t, v)
        return frac * hi + (1 - frac) * lo

    def predict_x0(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        r"""The :math:`x_0` that the predicted noise :math:`\epsilon` implies:

        .. math::

            x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}
                = \sqrt{1/\bar\alpha_t}\,x_t - \sqrt{1/\bar\alpha_t - 1}\,\epsilon.
        """
        return (self._at("sqrt_recip_alpha_bar", t, x) * x
                - self._at("sqrt_recipm1_alpha_bar", t, x) * eps)

    def posterior_mean(self, x0: Tensor, x: Tensor, t: Tensor) -> Tensor:
        r"""The mean of :math:`q(x_{t-1} \mid x_t, x_0)`:

        .. math::

            \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t}\,x_0
                + \frac{\sqrt{1 - \beta_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\,x_t.
        """
        return self._at("posterior_coef_x0", t, x) * x0 + self._at("posterior_coef_xt", t, x) * x

    def vb_bits(self, x0: Tensor, x: Tensor, t: Tensor, eps: Tensor, v: Tensor) -> Tensor:
        r"""The variational bound term that trains the learned variance (improved DDPM,
        :math:`L_\text{vlb}`), per row in bits:
        :math:`\mathrm{KL}\left(q(x_{t-1} \mid x_t, x_0) \,\|\, p(x_{t-1} \mid x_t)\right)` for
        :math:`t > 0` and the discretised Gaussian decoder's negative log-likelihood of :math:`x_0`
        for :math:`t = 0`, averaged over the :math:`d` channels.
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
        r"""One DDPM reverse step from step index ``i`` given the predicted noise: the posterior
        mean of :math:`q(x_{i-1} \mid x_i, \hat x_0)` plus temperature-scaled noise with the
        posterior variance, or with the learned variance (:meth:`learned_log_var`) when the
        network's ``v`` is given."""
        x0 = float(self.sqrt_recip_alpha_bar[i]) * x - float(self.sqrt_recipm1_alpha_bar[i]) * eps
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        mean = float(self.posterior_coef_x0[i]) * x0 + float(self.posterior_coef_xt[i]) * x
        if i == 0:
            return mean
        if v is None:
            return mean + temperature * math.sqrt(float(self.posterior_var[i])) * noise
        return mean + temperature * torch.exp(0.5 * self.learned_log_var(i, v.to(x.dtype))) * noise


def gaussian_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu_1, \sigma_1^2) \,\|\, \mathcal{N}(\mu_2, \sigma_2^2))`
    elementwise, in nats, for the means ``mean1``, ``mean2`` and the log variances
    :math:`\log\sigma_1^2` = ``log_var1``, :math:`\log\sigma_2^2` = ``log_var2``."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor,
                                        bins: int = 255) -> Tensor:
    r""":math:`\log P(x)` of data in [-1, 1] quantised to ``bins`` + 1 levels under
    :math:`\mathcal{N}(\mu, \sigma^2)`, :math:`\mu` = ``mean``, :math:`\log\sigma` = ``log_scale``:
    the Gaussian mass of :math:`x`'s bin (width 2 / ``bins``), the outermost bins reaching to
    +-infinity (Ho et al. 2020, Sec. 3.3). The normal CDF is the tanh approximation improved DDPM
    uses."""
    def cdf(u: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))

    inv_std = torch.exp(-log_scale)
    upper, lower = cdf(inv_std * (x - mean + 1.0 / bins)), cdf(inv_std * (x - mean - 1.0 / bins))
    log = lambda p: torch.log(p.clamp(min=1e-12))  # noqa: E731
    return torch.where(x < -0.999, log(upper),
                       torch.where(x > 0.999, log(1.0 - lower), log(upper - lower)))


