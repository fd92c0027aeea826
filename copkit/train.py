"""The training loop every model of the book shares, and :func:`fit`, the one entry that trains any
of them from its :class:`copkit.recipe.Recipe` and configurations.

- :func:`train` runs :class:`copkit.step.StepRunner` in its loop: each step's learning rate,
  forward, clipping, update and EMA (:mod:`copkit.step`, which ``make bench`` times too).
- :func:`train` resumes from the run folder's checkpoint and writes its metrics and checkpoints
  (:mod:`copkit.checkpoint`: safetensors, atomic, never a pickle); the batch and draws of step t
  depend on (seed, t) alone (:mod:`copkit.recipe`), so a resumed run ends with the weights of an
  uninterrupted one. A tqdm bar shows the live loss.
- A loss that becomes NaN or infinite stops the run *before* the update, keeps the last good
  checkpoint, and raises :class:`TrainingDiverged` (on CUDA the check runs at logging and
  checkpoint steps only, so that the inner loop never waits for the GPU).
- One training at a time in a run folder: a second process that trains into a folder in use
  waits for it (:func:`copkit.io.folder_lock`), then resumes from where the first one ended.
- Under ``torchrun`` the step runs in every process through DistributedDataParallel, each on its
  :func:`copkit.dist.shard` of the global batch; only rank 0 logs, shows progress and writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm import tqdm  # the plain bar: it renders as text in executed notebooks (no widgets)

from . import dist
from .checkpoint import (
    CHECKPOINT,
    METRICS,
    WEIGHTS,
    append_metrics,
    load_shipped,
    load_weights,
    note,
    read_metrics,
    resume,
    run_folder,
    save_checkpoint,
    shipped_folder,
)
from .config import config_hash
from .io import bars_off, fault_point, folder_lock
from .recipe import Recipe, TrainConfig
from .step import StepRunner

__all__ = ["TrainingDiverged", "train", "Fitted", "fit"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept on disk."""


# ------------------------------------------------------------------------------ the loop
def train(
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    step_fn: Callable[[int, torch.Generator], tuple[Tensor, str, dict[str, Any]]],
    train_cfg: TrainConfig,
    run_dir: str | Path,
    config: Any,
    evaluate: Callable[[int], dict[str, Any]] | None = None,
    desc: str = "train",
    stop_after: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    evaluate_ema: bool = False,
) -> list[dict]:
    """Train until ``train_cfg.steps``, resuming from ``run_dir/checkpoint.safetensors`` if present.

    Args:
        modules: the networks to checkpoint and average (EMA), by name.
        optimizers: by key; every step sets their learning rate from :func:`copkit.step.cosine_lr`.
        step_fn: ``(step, generator) -> (loss, key, logs)``: one batch's loss (not yet
            back-propagated), the key of the optimiser that takes this step, and numbers to log
            (detached tensors are read only at logging steps). Under torchrun it computes the
            loss of this process's :func:`copkit.dist.shard` of the global batch.
        config: the full configuration of the run (its hash is checked on resume).
        evaluate: called with the step every ``eval_every`` steps and at the end; what it
            returns is logged (with ``"eval": True``).
        stop_after: return after this many steps (a checkpoint is written there), as if killed.
            (``$COPKIT_FAULT=step:<k>`` kills the process after step k, before its checkpoint:
            :func:`copkit.io.fault_point`.)
        evaluate_ema: evaluate the EMA weights (what is kept and shipped) instead of the live ones;
            the live weights are put back before training goes on.

    Returns:
        The run's metrics (the JSON lines of ``run_dir/metrics.jsonl``).

    The run folder is locked while it trains (:func:`copkit.io.folder_lock`): a second training
    into it waits, with one line on stderr, and then resumes from the checkpoint the first left.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    args = (modules, optimizers, step_fn, train_cfg, run_dir, config, evaluate, desc, stop_after,
            device, progress, evaluate_ema)
    if dist.is_main():  # the other processes of a torchrun wait for rank 0 at the first barrier
        with folder_lock(run_dir):
            return _train(*args)
    return _train(*args)


def _train(modules, optimizers, step_fn, train_cfg: TrainConfig, run_dir: Path, config: Any,
           evaluate, desc: str, stop_after: int | None, device, progress: bool,
           evaluate_ema: bool) -> list[dict]:
    """:func:`train`'s loop, with the run folder held."""
    main = dist.is_main()
    runner = StepRunner(modules, optimizers, step_fn, train_cfg, device)
    start = resume(run_dir, config, modules, runner.emas, optimizers, device, main)
    dist.barrier()  # nobody starts before every process has read the checkpoint

    def log(record: dict) -> None:
        if main:
            append_metrics(run_dir / METRICS, record)

    def evaluation(step: int) -> None:
        if main:
            log({"step": step, "eval": True, **_evaluated(evaluate, step, runner, evaluate_ema)})
        for m in modules.values():
            m.train()

    end = train_cfg.steps if stop_after is None else min(train_cfg.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=train_cfg.steps, desc=desc,
               disable=bars_off(progress and main), mininterval=5.0, dynamic_ncols=False, ncols=100)
    sync_free = runner.device.type == "cuda"  # read the loss at logging and checkpoint steps only
    for m in modules.values():
        m.train()
    t0 = time.perf_counter()
    if evaluate is not None and start == 0 and end > 0:
        evaluation(0)  # the untrained model, for curves that start at 0
    for step in bar:
        loss, key, logs = runner.forward(step)
        done = step + 1
        logging = step % train_cfg.log_every == 0 or done == train_cfg.steps
        saving = done % train_cfg.ckpt_every == 0 or done == train_cfg.steps or done == end
        if logging or saving or not sync_free:
            mean_loss = dist.all_mean(loss.detach())
            if not torch.isfinite(mean_loss).all():
                bar.close()
                kept = run_dir / CHECKPOINT
                raise TrainingDiverged(
                    f"{desc}: the loss became {mean_loss.item()} at step {step}; no update was "
                    "applied and the last good checkpoint "
                    f"({kept if kept.exists() else 'none yet'}) is kept. Lower the learning rate "
                    f"(now {train_cfg.lr}) or check the data.")
        runner.update(loss, key)
        if logging:
            log({"step": step, "lr": runner.lr, "opt": key, "loss": mean_loss.item(),
                 **{k: float(v) if isinstance(v, Tensor) else v for k, v in logs.items()},
                 "seconds": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{mean_loss.item():.4f}", refresh=False)
        if evaluate is not None and ((train_cfg.eval_every and done % train_cfg.eval_every == 0)
                                     or done == train_cfg.steps):
            evaluation(done)
        fault_point("step", done)
        if saving and main:
            save_checkpoint(run_dir, modules, runner.emas, optimizers, done, config)
    bar.close()
    dist.barrier()  # the last checkpoint is on disk before any process reads it
    for m in modules.values():
        m.eval()
    return read_metrics(run_dir / METRICS)


def _evaluated(evaluate: Callable[[int], dict], step: int, runner: StepRunner, ema: bool) -> dict:
    """``evaluate(step)``; with ``ema``, of the EMA weights, the live ones put back afterwards."""
    if not ema:
        return evaluate(step)
    live = {n: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for n, m in runner.modules.items()}
    for n, m in runner.modules.items():
        runner.emas[n].copy_to(m)
    out = evaluate(step)
    for n, m in runner.modules.items():
        m.load_state_dict(live[n])
    return out


# ------------------------------------------------------------------------ one entry for every model
@dataclass
class Fitted:
    """What :func:`fit` returns."""

    model: nn.Module  #: the EMA weights, in eval mode, on the training device
    metrics: list[dict]  #: the JSON lines of the run's metrics.jsonl
    config: dict  #: the run configuration (:meth:`copkit.recipe.Recipe.run_config`)
    #: its :func:`copkit.config.config_hash` (64 hex digits); the run folder is named by the first 8
    hash: str
    #: ``<data_dir>/runs/<name>-<hash8>``: checkpoint, metrics, config.json; or the shipped copy
    #: ``<data_dir>/pretrained/runs/<name>-<hash8>`` it was loaded from
    folder: Path



def fit(recipe: Recipe, model_cfg: Any, train_cfg: TrainConfig, data: Any, tag: Mapping[str, Any],
        data_dir: str | Path, init: tuple[str, Mapping[str, Tensor]] | None = None,
        device: torch.device | str = "cpu", desc: str | None = None, progress: bool = True,
        stop_after: int | None = None, evaluate_ema: bool = False) -> Fitted:
    """Train a model of kind ``recipe`` (configuration ``model_cfg``) with ``train_cfg`` on ``data``
    into its run folder ``<data_dir>/runs/<recipe.name>-<hash8>``
    (:func:`copkit.checkpoint.run_folder` of :meth:`copkit.recipe.Recipe.run_config`), resuming from
    its checkpoint when it holds one (a finished run is only loaded), and return the network holding
    its EMA weights, in eval mode. When the run folder holds no checkpoint but the run was shipped
    (:func:`copkit.checkpoint.ship_run`, in ``<data_dir>/pretrained/runs/``), its weights and
    metrics are loaded from there and nothing is trained.

    The network is made by :meth:`copkit.recipe.Recipe.setup` (from the weights of
    ``init = (run hash, state dict)`` when fine-tuning; the hash joins the run configuration) and
    trained by :func:`train` with ``recipe.evaluate``; then its EMA weights are read from the
    checkpoint. Parameters a step function froze for a step (CoMAE's g on f's turns) are left
    trainable as they were. ``tag`` describes the data (what it is, how many images, the CoMAE of
    its orders) and is part of the hash; ``stop_after`` stops after that many steps as if killed
    (for tests); ``evaluate_ema`` evaluates the EMA weights (:func:`train`).
    """
    config = recipe.run_config(model_cfg, train_cfg, data, tag,
                               init[0] if init is not None else None)
    folder = run_folder(data_dir, recipe.name, config)
    shipped = shipped_folder(data_dir, recipe.name, config)
    digest = config_hash(config)
    trainee = recipe.setup(model_cfg, train_cfg, data, device,
                           init[1] if init is not None else None)
    model = trainee.model
    if not (folder / CHECKPOINT).exists() and (shipped / WEIGHTS).exists():
        metrics = load_shipped(shipped, config, recipe.module, model)
        note("runs", f"{recipe.name}-{digest[:8]}", shipped)
        return Fitted(model.eval(), metrics, config, digest, shipped)
    trainable = [p.requires_grad for p in model.parameters()]
    evaluate = None if recipe.evaluate is None else (lambda step: recipe.evaluate(model, data))
    metrics = train({trainee.name: model}, trainee.optimizers, trainee.step_fn, train_cfg, folder,
                    config=config, evaluate=evaluate, desc=desc or recipe.name,
                    stop_after=stop_after, device=device, progress=progress,
                    evaluate_ema=evaluate_ema)
    for p, flag in zip(model.parameters(), trainable):
        p.requires_grad_(flag)
    load_weights(folder, recipe.module, model, ema=True)
    note("runs", f"{recipe.name}-{digest[:8]}", folder)
    return Fitted(model.eval(), metrics, config, digest, folder)
