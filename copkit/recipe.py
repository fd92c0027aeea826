"""What a model module hands to training, and what its step function takes its batch with.

Each model module (:mod:`copkit.comae`, :mod:`copkit.cmar`, :mod:`copkit.cvit`,
:mod:`copkit.metrics`) exposes a :class:`Recipe` (``RECIPE``: how to build its network, its step
function, which parameters each optimiser steps) and a ``from_profile(sizes, seed, **variant) ->
(model config, TrainConfig)``; :func:`copkit.train.fit` trains with both.

- :class:`TrainConfig`: how long and how a model is trained;
- :meth:`Recipe.setup`: the one place a network, its AdamW optimisers (:func:`optimizers`, with
  the one parameter-group rule of :func:`weight_decay_groups`) and its step function are made;
  :func:`copkit.train.fit`, ``make bench`` and :mod:`copkit.efficiency` all take them from it;
- a step function's batch and draws, deterministic on the CPU: the examples of step t
  (:func:`batch_indices`) and every random draw of step t (:func:`step_generator`) come from
  generators seeded by (seed, t) alone, so a resumed run replays exactly what an uninterrupted
  one would have done; :func:`take` moves a batch to the device without a host-device sync.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["TrainConfig", "Recipe", "Trainee", "weight_decay_groups", "optimizers", "batch_indices",
           "to_device", "take", "step_generator", "host_generator"]


@dataclass(frozen=True)
class TrainConfig:
    """How long and how a model is trained; part of the hash of every trained run."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    warmup_steps: int = 0
    final_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    eval_every: int = 0  #: 0: evaluate only at the end
    #: "fp32", or "bf16": the step's forward under bfloat16 autocast (CUDA; weights and optimiser
    #: stay float32). Hashed only when not "fp32", so runs made before the field keep their names.
    precision: str = dataclasses.field(default="fp32", metadata={"hash_if_set": True})
    #: compile every transformer block of the trained networks
    #: (:func:`copkit.step.compile_blocks`); hashed only when set, since compiled kernels round
    #: differently
    compile: bool = dataclasses.field(default=False, metadata={"hash_if_set": True})
    #: hold ``lr`` after the warm-up until this step, then decay it along half a cosine to
    #: ``final_lr`` at the last step (None: the cosine starts right after the warm-up). A run
    #: trained with the rate held can so go on, and end decayed (:func:`copkit.checkpoint.extend`).
    #: Hashed only when set.
    decay_from: int | None = dataclasses.field(default=None, metadata={"hash_if_set": True})

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps} and "
                             f"{self.batch_size}")
        if self.decay_from is not None and (isinstance(self.decay_from, bool)
                                            or self.decay_from < 0):
            raise ValueError(f"decay_from must be a step >= 0 (or None), got {self.decay_from!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {self.seed!r}; a model's from_profile "
                            "takes (sizes, seed, **variant): give lambda_c=, experiment=, phase= "
                            "or kind= by name")


def weight_decay_groups(named_parameters: Iterable[tuple[str, Tensor]],
                        no_weight_decay: Iterable[str], weight_decay: float) -> list[dict]:
    """The book's one AdamW parameter-group rule: **decay every parameter with ndim >= 2 whose name
    is not in the model's ``no_weight_decay()`` set; nothing else decays** (biases, norms, scalars
    and the exempted embeddings, position embeddings and queries).

    This is timm's convention (``timm.optim.param_groups_weight_decay`` with a model's
    ``no_weight_decay()``, which timm's ``VisionTransformer`` defines); it is written out here
    because the order matters: the decayed group comes first, then the rest, both always present
    and each in the order of ``named_parameters``. The book's checkpoints store the optimiser
    state in that order, and gradient clipping sums the norms in it.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
        >>> groups = weight_decay_groups(net.named_parameters(), (), 0.05)
        >>> [[p.shape for p in g["params"]] for g in groups]
        [[torch.Size([3, 2])], [torch.Size([3]), torch.Size([3]), torch.Size([3])]]
    """
    exempt = set(no_weight_decay)
    decay, rest = [], []
    for name, p in named_parameters:
        (decay if p.ndim >= 2 and name not in exempt else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def optimizers(recipe: Recipe, model: nn.Module,
               train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """The AdamW optimisers of a model, by key (``recipe.parameters``), each with the groups of
    :func:`weight_decay_groups` for the model's ``no_weight_decay()`` (none when it has no such
    method), and the ``weight_decay``, ``lr`` and ``betas`` of ``train_cfg``."""
    params = (recipe.parameters(model) if recipe.parameters
              else {recipe.module: list(model.named_parameters())})
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return {key: torch.optim.AdamW(weight_decay_groups(named, exempt, train_cfg.weight_decay),
                                   lr=train_cfg.lr, betas=train_cfg.betas)
            for key, named in params.items()}


@dataclass
class Trainee:
    """A network ready to train (:meth:`Recipe.setup`): what :func:`copkit.train.train` and
    :class:`copkit.step.StepRunner` take."""

    name: str  #: the network's name in checkpoints (the recipe's ``module``)
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    step_fn: Callable[[int, torch.Generator], tuple[Tensor, str, dict[str, Any]]]


@dataclass(frozen=True)
class Recipe:
    """What :func:`copkit.train.fit` needs to know about one kind of model; every model module
    exposes one (``RECIPE``). ``data`` is the module's own data holder (tokens, images, orders,
    ...).

    Attributes:
        name: the run folder's prefix (``<data_dir>/runs/<name>-<hash8>``) and the key of the model
            configuration in the hashed run configuration.
        module: the key of the network's weights in the checkpoint (``model.<module>.``,
            ``ema.<module>.``).
        build: ``(model config, data) -> nn.Module`` with fresh weights (drawn after torch is
            seeded).
        step: ``(network, model config, TrainConfig, data) -> step_fn``
            for :func:`copkit.train.train`.
        parameters: ``network -> {optimiser key: [(name, parameter), ...]}``, the parameters each
            optimiser steps, in order (CoMAE: ``"f"``, the selector then the temperature, and
            ``"g"``); None: one optimiser keyed ``module`` over ``named_parameters()``. The order is
            the optimiser's (its checkpointed state is indexed by it; clipping sums norms in it).
        evaluate: ``(network, data) -> dict`` of validation numbers, logged every
            ``TrainConfig.eval_every`` steps and at the end; None: no evaluation.
        hashed: ``data -> dict`` of training choices held in ``data`` that are part of the run's
            hash (MAR's order kind); None: none.
        start: ``(network, state dict) -> None`` loads the weights a fine-tune starts from
            (``copkit.train.fit(..., init=...)``); None: ``load_state_dict`` (strict). The pruning
            baseline takes a plain ViT's weights into its ViT, its keep-score heads left as built.
    """

    name: str
    module: str
    build: Callable[[Any, Any], nn.Module]
    step: Callable[[nn.Module, Any, TrainConfig, Any], Callable]
    parameters: Callable[[nn.Module], Mapping[str, list[tuple[str, Tensor]]]] | None = None
    evaluate: Callable[[nn.Module, Any], dict] | None = None
    hashed: Callable[[Any], dict] | None = None
    start: Callable[[nn.Module, Mapping[str, Tensor]], None] | None = None

    def run_config(self, model_cfg: Any, train_cfg: TrainConfig, data: Any, tag: Mapping[str, Any],
                   init: str | None = None) -> dict:
        """Everything that determines the trained model, what its run folder is named by: the model
        configuration, the training, ``tag`` (what the data is), the recipe's hashed choices and,
        for a fine-tune, the hash of the run it starts from."""
        config = {"model": self.name, self.name: model_cfg, "train": train_cfg, "data": dict(tag)}
        if self.hashed is not None:
            config.update(self.hashed(data))
        if init is not None:
            config["init"] = init
        return config

    def setup(self, model_cfg: Any, train_cfg: TrainConfig, data: Any,
              device: torch.device | str = "cpu",
              init: Mapping[str, Tensor] | None = None) -> Trainee:
        """The one place a network of this kind is made ready to train, in this order:
        ``torch.manual_seed(train_cfg.seed)``; the network (``build``) on ``device``; the weights
        ``init`` when fine-tuning (``start``); its AdamW optimisers (:func:`optimizers`); its step
        function (``step``)."""
        torch.manual_seed(train_cfg.seed)
        model = self.build(model_cfg, data).to(device)
        if init is not None:
            (self.start or (lambda net, state: net.load_state_dict(state)))(model, init)
        return Trainee(self.module, model, optimizers(self, model, train_cfg),
                       self.step(model, model_cfg, train_cfg, data))



# ------------------------------------------------------------------------- a step's batch and draws
def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """The example indices of training step ``step``: epochs are seeded permutations of range(n),
    cut into ``n // batch_size`` full batches (the remainder is dropped for that epoch)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the data set ({n})")
    epoch, b = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[b * batch_size:(b + 1) * batch_size]


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``. A host tensor bound for a GPU goes through pinned (page-locked) memory
    and is sent without blocking: a copy from ordinary host memory makes the host wait until the GPU
    has finished all its queued work, a host-device sync on every training step."""
    device = torch.device(device)
    if t.device.type == device.type and (device.index is None or t.device.index == device.index):
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def take(data: Tensor, idx: Tensor, device: torch.device | str) -> Tensor:
    """A training batch ``data[idx]`` on ``device``, without a host-device sync: the host's
    ``idx`` goes to wherever ``data`` lives, and the rows on to ``device``, by :func:`to_device`.
    ``data`` may be anything a tensor of indices indexes on the host (images read from disk,
    :class:`copkit.imagefolder.ImageFolderImages`).

    >>> take(torch.arange(10) * 10, torch.tensor([3, 1]), "cpu").tolist()
    [30, 10]
    """
    return to_device(data[to_device(idx, getattr(data, "device", "cpu"))], device)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for every random draw of one step, seeded by (seed, step) alone."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 2_654_435_761 + int(step) * 97_531 + 1) % (2**63))
    return g


def host_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator for a step's draws that size tensors (a mask ratio, a drop ratio, a shift):
    ``generator`` itself on the CPU; for a CUDA generator, a CPU generator seeded with its seed,
    so that reading such a draw never waits for the GPU. Call it once per step."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())
