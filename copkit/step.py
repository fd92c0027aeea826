"""One training step, exactly as :func:`copkit.train.train` takes it, for its loop and for whoever
times it (``make bench``, :mod:`copkit.efficiency`).

- :func:`cosine_lr`: the learning rate of a cosine schedule after a linear warm-up (MAE's and
  MAR's schedule), optionally held at its peak until ``decay_from``.
- :class:`EMA`: an exponential moving average of a network's weights, what is evaluated and
  shipped (MAR keeps one with decay 0.9999).
- :func:`compile_blocks`: regional ``torch.compile`` of the transformer blocks.
- :class:`StepRunner`: the schedule's rate, the forward under the configured precision, gradient
  clipping, the update and every EMA; under ``torchrun`` the step function runs inside
  DistributedDataParallel.

A model's ``step_fn(step, generator) -> (loss, key, logs)`` computes one batch's loss and names the
optimiser that takes the step, which is how alternating optimisation (CoMAE's f and g) is expressed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from timm.models.eva import EvaBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import dist
from .recipe import TrainConfig, Trainee, step_generator

__all__ = ["cosine_lr", "EMA", "compile_blocks", "StepRunner"]


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
              final_lr: float = 0.0, decay_from: int | None = None) -> float:
    """Learning rate at ``step``: linear warm-up from base/warmup to ``base_lr`` over
    ``warmup_steps``, then half a cosine from ``base_lr`` down to ``final_lr`` at ``total_steps``;
    with ``decay_from``, ``base_lr`` is held until that step and the cosine runs from there.

    Example:
        >>> cosine_lr(0, 100, 1.0, warmup_steps=10)
        0.1
        >>> round(cosine_lr(55, 100, 1.0, warmup_steps=10), 6)
        0.5
        >>> cosine_lr(100, 100, 1.0, warmup_steps=10)
        0.0
        >>> cosine_lr(50, 100, 1.0, decay_from=50), cosine_lr(75, 100, 1.0, decay_from=50)
        (1.0, 0.5)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    start = warmup_steps if decay_from is None else max(warmup_steps, decay_from)
    if step < start:
        return base_lr
    progress = min(1.0, (step - start) / max(1, total_steps - start))
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's floating-point state: s <- d s + (1 - d) w."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        state = module.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        if floats:  # one fused call for all floating-point tensors (few kernel launches on a GPU)
            torch._foreach_lerp_([self.shadow[k] for k in floats],
                                 [state[k].detach() for k in floats], 1.0 - self.decay)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)


def compile_blocks(module: nn.Module, **compile_kwargs: Any) -> int:
    """Compile every transformer block in ``module`` in place (``nn.Module.compile``: the
    parameter names, and so the checkpoints, stay as they are); returns how many.
    ``compile_kwargs`` go to ``torch.compile`` (``backend``, ``mode``; its defaults otherwise).

    Regional compilation: the blocks (timm's ``Block`` and ``EvaBlock``) hold nearly all the FLOPs
    of every model here, compile once per distinct block shape, and leave the Python around them
    (masking, gathering, the random draws) eager. A block already compiled is left alone."""
    blocks = [m for m in module.modules() if isinstance(m, (Block, EvaBlock))]
    for blk in blocks:
        if getattr(blk, "_compiled_call_impl", None) is None:
            blk.compile(**compile_kwargs)
    return len(blocks)


class _Step(nn.Module):
    """The networks of a run and its step function as one module, so that DistributedDataParallel
    sees the whole step (several networks, several methods) as its forward."""

    def __init__(self, modules: Mapping[str, nn.Module], step_fn: Callable) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(dict(modules))
        self.step_fn = step_fn

    def forward(self, step: int, generator: torch.Generator):
        return self.step_fn(step, generator)


class StepRunner:
    """A training step exactly as :func:`copkit.train.train` takes it, for its loop and for
    whoever times it (``make bench``, :func:`copkit.efficiency.train_rate`).

    Made for the networks ``modules`` (by name), their ``optimizers`` (by key), ``step_fn`` and
    ``train_cfg`` on ``device``: the EMA of every network (``emas``); under torchrun the step
    function inside DistributedDataParallel; with ``train_cfg.compile`` every transformer block
    compiled (``compiled`` counts them). :meth:`forward` computes step t's loss, :meth:`update`
    applies it; calling the runner does both.
    """

    def __init__(self, modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer],
                 step_fn: Callable[[int, torch.Generator], tuple[Tensor, str, dict[str, Any]]],
                 train_cfg: TrainConfig, device: torch.device | str = "cpu") -> None:
        self.modules, self.optimizers, self.train_cfg = dict(modules), dict(optimizers), train_cfg
        self.device = torch.device(device)
        self.emas = {name: EMA(m, train_cfg.ema_decay) for name, m in self.modules.items()}
        self.step_fn = step_fn
        # find_unused_parameters: CoMAE's alternating steps leave a network idle
        if dist.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_fn = DistributedDataParallel(_Step(self.modules, step_fn), device_ids=ids,
                                                   find_unused_parameters=True)
        self.compiled = (sum(compile_blocks(m) for m in self.modules.values()) if train_cfg.compile
                         else 0)
        self.lr = train_cfg.lr  #: the learning rate of the last step's forward

    @classmethod
    def of(cls, trainee: Trainee, train_cfg: TrainConfig,
           device: torch.device | str = "cpu") -> StepRunner:
        """The runner of a network made by :meth:`copkit.recipe.Recipe.setup`."""
        return cls({trainee.name: trainee.model}, trainee.optimizers, trainee.step_fn, train_cfg,
                   device)

    def forward(self, step: int) -> tuple[Tensor, str, dict[str, Any]]:
        """Step ``step``'s (loss, optimiser key, logs), nothing updated yet: every optimiser's
        learning rate set to the schedule's (:func:`cosine_lr`, kept in ``lr``), the step's draws
        from :func:`copkit.recipe.step_generator` (seed, step), the forward under the
        precision's autocast."""
        tc = self.train_cfg
        self.lr = cosine_lr(step, tc.steps, tc.lr, tc.warmup_steps, tc.final_lr, tc.decay_from)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            return self.step_fn(step, step_generator(tc.seed, step, self.device))

    def update(self, loss: Tensor, key: str) -> None:
        """Apply a loss of :meth:`forward`: backward, gradients clipped to ``grad_clip`` (their norm
        summed over the parameters of optimiser ``key``), that optimiser's step, every EMA."""
        opt = self.optimizers[key]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.train_cfg.grad_clip:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.train_cfg.grad_clip)
        opt.step()
        for name, m in self.modules.items():
            self.emas[name].update(m)

    def __call__(self, step: int) -> tuple[Tensor, str, dict[str, Any]]:
        """One whole step (:meth:`forward` then :meth:`update`), without the loop's finite-loss
        check, logging or checkpoint: what a step costs."""
        loss, key, logs = self.forward(step)
        self.update(loss, key)
        return loss, key, logs
