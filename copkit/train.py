"""The training loop every model of the book shares.

- AdamW with a cosine learning-rate schedule after a linear warm-up (:func:`cosine_lr`);
- an exponential moving average of the weights (:class:`EMA`);
- deterministic on the CPU: the batch of step t and every random draw of step t come from
  generators seeded by (seed, t) (:func:`batch_indices`, :func:`step_generator`), so a run resumed
  from a checkpoint replays exactly what an uninterrupted run would have done;
- a tqdm progress bar with the live loss, metrics appended as JSON lines;
- checkpoints as safetensors (weights, EMA, optimiser state) with the JSON metadata inside the same
  file, written atomically; never a pickle;
- a loss that becomes NaN or infinite stops the run *before* the update, keeps the last good
  checkpoint, and raises :class:`TrainingDiverged` (on CUDA the check runs at logging and
  checkpoint steps only, so that the inner loop never waits for the GPU; a checkpoint is never
  written after a non-finite loss);
- one training at a time in a run folder: a second process that trains into a folder in use
  waits for it (one line says so; :func:`copkit.io.folder_lock`), then resumes from where the
  first one ended, so records are never written twice;
- under ``torchrun`` the step runs in every process through DistributedDataParallel, each
  process on its :func:`copkit.dist.shard` of the global batch; only rank 0 logs, shows progress
  and writes checkpoints, and every process resumes from the same checkpoint (:mod:`copkit.dist`);
- ``TrainConfig.precision = "bf16"`` runs the step's forward under bfloat16 autocast;
  ``TrainConfig.compile`` compiles each transformer block with ``torch.compile``
  (:func:`compile_blocks`; ``make bench`` measures whether that pays on a device).

:func:`train` owns the update; a model supplies ``step_fn(step, generator) -> (loss, key, logs)``
that computes one batch's loss and names the optimiser (``key``) that takes the step, which is how
alternating optimisation (CoMAE's f and g) is expressed.

:func:`fit` is the one entry that trains any model of the book: each model module exposes a
:class:`Recipe` (``copkit.comae.RECIPE``, ``copkit.cmar.RECIPE``, ``copkit.cvit.RECIPE``,
``copkit.metrics.RECIPE``) and a ``from_profile(sizes, seed, **variant) -> (model config,
TrainConfig)``; ``fit`` does the rest (run folder, seeding, the network, AdamW with the one
parameter-group rule of :func:`weight_decay_groups`, :func:`train`, EMA weights, eval mode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from timm.models.eva import EvaBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm  # the plain bar: it renders as text in executed notebooks (no widgets)

from . import dist
from .io import DamagedFileError, atomic_write_bytes, atomic_write_json, atomic_write_text, fault_point, folder_lock

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "run_folder",
    "config_hash",
    "cosine_lr",
    "EMA",
    "batch_indices",
    "to_device",
    "take",
    "step_generator",
    "host_generator",
    "save_tensors",
    "load_tensors",
    "train",
    "read_metrics",
    "load_weights",
    "artifact_path",
    "save_artifact",
    "compile_blocks",
    "load_artifact",
    "weight_decay_groups",
    "optimizers",
    "Recipe",
    "Fitted",
    "fit",
]


@dataclass(frozen=True)
class TrainConfig:
    """How long and how a model is trained; part of the hash of every trained artifact."""

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
    #: stay float32). Hashed only when not "fp32", so runs made before the field existed keep their names.
    precision: str = dataclasses.field(default="fp32", metadata={"hash_if_set": True})
    #: compile every transformer block of the trained networks (:func:`compile_blocks`); hashed
    #: only when set, since compiled kernels round differently
    compile: bool = dataclasses.field(default=False, metadata={"hash_if_set": True})

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps} and {self.batch_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {self.seed!r}; a model's from_profile takes (sizes, seed, "
                            "**variant): give lambda_c=, experiment=, phase= or kind= by name")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept on disk."""


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # A field marked hash_if_set (added after artifacts were made) is left out while it holds
        # its default, so the configurations that existed before it keep their hashes.
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("hash_if_set") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: Any) -> str:
    """SHA-256 of a configuration (dataclasses and dicts, nested) in canonical JSON: 64 hex digits.

    Two configurations hash equal exactly when every field is equal; artifacts are named with the
    first 8 digits.

    Example:
        >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
        True
        >>> len(config_hash({"a": 1}))
        64
    """
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, final_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up from base/warmup to ``base_lr`` over
    ``warmup_steps``, then half a cosine from ``base_lr`` down to ``final_lr`` at ``total_steps``.

    Example:
        >>> cosine_lr(0, 100, 1.0, warmup_steps=10)
        0.1
        >>> round(cosine_lr(55, 100, 1.0, warmup_steps=10), 6)
        0.5
        >>> cosine_lr(100, 100, 1.0, warmup_steps=10)
        0.0
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
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
            torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].detach() for k in floats],
                                 1.0 - self.decay)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)


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


# ------------------------------------------------------------------------------ safetensors files
def save_tensors(path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write tensors and JSON metadata into one safetensors file, atomically."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = st_save(data, metadata={"json": json.dumps(_jsonable(metadata), sort_keys=True)})
    return atomic_write_bytes(path, blob)


def load_tensors(path: str | Path, device: torch.device | str = "cpu",
                 remedy: str | None = None) -> tuple[dict[str, Tensor], dict]:
    """Read a file written by :func:`save_tensors`: (tensors, metadata). No pickle is involved.

    A file that is truncated, corrupt or not written by :func:`save_tensors` (no copkit metadata)
    raises :class:`copkit.io.DamagedFileError` naming it and saying what to do (``remedy``; by
    default from the file's name: delete the run folder of a checkpoint, or the artifact, and run
    again what made it). A missing file raises FileNotFoundError.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            raw = (fh.metadata() or {}).get("json")
            if raw is None:
                raise DamagedFileError(path, "a safetensors file without copkit's metadata: not a checkpoint or "
                                             "artifact copkit wrote", remedy)
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise DamagedFileError(path, "its metadata is not a JSON object: not a file copkit wrote", remedy)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (FileNotFoundError, DamagedFileError):
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFileError(path, f"cannot be read, it is truncated or corrupt ({type(err).__name__}: {err})",
                               remedy) from err
    return tensors, meta


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: Mapping[str, Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------------------ the loop
def read_metrics(path: str | Path, partial_ok: bool = False) -> list[dict]:
    """The JSON lines of a metrics file, as dicts (an absent file reads as no lines). With
    ``partial_ok`` a last line without its newline (a process killed while appending it) is
    dropped; otherwise any unreadable line is a :class:`copkit.io.DamagedFileError`."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if partial_ok and text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DamagedFileError(path, f"line {number} is not JSON") from None
    return records


def _under(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose key starts with ``prefix``, keyed without it."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _save_checkpoint(path: Path, modules, emas, optimizers, step: int, meta: dict) -> None:
    tensors: dict[str, Tensor] = {}
    opt_meta = {}
    for name, m in modules.items():
        tensors.update({f"model.{name}.{k}": v for k, v in m.state_dict().items()})
        tensors.update({f"ema.{name}.{k}": v for k, v in emas[name].shadow.items()})
    for key, opt in optimizers.items():
        t, m = _optimizer_tensors(opt, f"opt.{key}")
        tensors.update(t)
        opt_meta[key] = m
    save_tensors(path, tensors, {**meta, "step": step, "optimizers": opt_meta})


def _load_state(module: nn.Module, state: Mapping[str, Tensor], path: Path, remedy: str | None = None) -> None:
    """``module.load_state_dict(state)`` from the file ``path``; tensors that do not fit the module
    (the code changed under the file, or the file is another model's) raise
    :class:`copkit.io.DamagedFileError` naming the file, not a raw load_state_dict error."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise DamagedFileError(path, f"its tensors do not fit {type(module).__name__} ({first})", remedy) from err


def _load_checkpoint(path: Path, modules, emas, optimizers, device, digest: str) -> tuple[int, dict]:
    """Resume from ``path``: the checkpoint must have been written by the configuration whose hash
    is ``digest`` (checked before any weight is loaded, so a foreign checkpoint is named as such)."""
    # Read on the host: load_state_dict copies weights and optimiser moments to the parameters'
    # device but leaves each optimiser's ``step`` count on the host, as a fresh optimiser keeps it
    # (a step count on a GPU would make every optimiser step wait for the GPU to read it).
    tensors, meta = load_tensors(path, device="cpu")
    if meta.get("config_hash") != digest:
        raise DamagedFileError(path, f"written by another configuration (hash {str(meta.get('config_hash', '?'))[:8]}, "
                                     f"this run {digest[:8]})")
    for name, m in modules.items():
        _load_state(m, _under(tensors, f"model.{name}."), path)
        emas[name].shadow = {k: v.to(device) for k, v in _under(tensors, f"ema.{name}.").items()}
    try:
        for key, opt in optimizers.items():
            _load_optimizer(opt, f"opt.{key}", tensors, meta["optimizers"][key])
    except (KeyError, ValueError) as err:
        raise DamagedFileError(path, f"its optimiser state does not fit this run's ({type(err).__name__}: {err})") from err
    return int(meta["step"]), meta


def train(
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    step_fn: Callable[[int, torch.Generator], tuple[Tensor, str, dict[str, float]]],
    cfg: TrainConfig,
    run_dir: str | Path,
    config: Any,
    evaluate: Callable[[int], dict[str, Any]] | None = None,
    desc: str = "train",
    stop_after: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    evaluate_ema: bool = False,
) -> list[dict]:
    """Train until ``cfg.steps``, resuming from ``run_dir/checkpoint.safetensors`` if present.

    Args:
        modules: the networks to checkpoint and average (EMA), by name.
        optimizers: by key; every step sets their learning rate from :func:`cosine_lr`.
        step_fn: ``(step, generator) -> (loss, key, logs)``: one batch's loss (not yet
            back-propagated), the key of the optimiser that takes this step, and numbers to log
            (detached tensors are read only at logging steps). Under torchrun it computes the
            loss of this process's :func:`copkit.dist.shard` of the global batch.
        config: the full configuration of the run (its hash is checked on resume).
        evaluate: called with the step every ``cfg.eval_every`` steps and at the end; what it
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
    if dist.is_main():  # the other processes of a torchrun wait for rank 0 at the first barrier
        with folder_lock(run_dir):
            return _train(modules, optimizers, step_fn, cfg, run_dir, config, evaluate, desc, stop_after, device,
                          progress, evaluate_ema)
    return _train(modules, optimizers, step_fn, cfg, run_dir, config, evaluate, desc, stop_after, device, progress,
                  evaluate_ema)


def _train(modules, optimizers, step_fn, cfg: TrainConfig, run_dir: Path, config: Any, evaluate, desc: str,
           stop_after: int | None, device: torch.device | str, progress: bool, evaluate_ema: bool) -> list[dict]:
    """:func:`train`'s loop, with the run folder held."""
    ckpt = run_dir / "checkpoint.safetensors"
    metrics_path = run_dir / "metrics.jsonl"
    digest = config_hash(config)
    main = dist.is_main()
    emas = {name: EMA(m, cfg.ema_decay) for name, m in modules.items()}
    start = 0
    if ckpt.exists():
        start, meta = _load_checkpoint(ckpt, modules, emas, optimizers, device, digest)
        if main:  # lines logged after the checkpoint belong to steps that will be run again
            kept = [r for r in read_metrics(metrics_path, partial_ok=True)
                    if r["step"] < start or (r["step"] == start and r.get("eval"))]
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    elif main:
        atomic_write_json(run_dir / "config.json", {"config_hash": digest, "config": _jsonable(config)})
        metrics_path.unlink(missing_ok=True)
    dist.barrier()  # nobody starts before every process has read the checkpoint
    meta = {"config_hash": digest, "config": _jsonable(config)}

    def log(record: dict) -> None:
        if main:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def checkpoint(step: int) -> None:
        if main:
            _save_checkpoint(ckpt, modules, emas, optimizers, step, meta)

    run_step = step_fn
    if dist.world_size() > 1:
        dev = torch.device(device)
        # find_unused_parameters: CoMAE's alternating steps leave one network without gradients.
        run_step = DistributedDataParallel(_Step(modules, step_fn), device_ids=[dev.index] if dev.type == "cuda" else None,
                                           find_unused_parameters=True)
    sync_free = torch.device(device).type == "cuda"
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc=desc, disable=not (progress and main),
               mininterval=5.0, dynamic_ncols=False, ncols=100)
    for m in modules.values():
        m.train()
        if cfg.compile:
            compile_blocks(m)
    def evaluation(step: int) -> None:
        if main:
            live = {n: {k: v.detach().clone() for k, v in m.state_dict().items()}
                    for n, m in modules.items()} if evaluate_ema else {}
            if evaluate_ema:
                for n, m in modules.items():
                    emas[n].copy_to(m)
            log({"step": step, "eval": True, **evaluate(step)})
            if evaluate_ema:
                for n, m in modules.items():
                    m.load_state_dict(live[n])
        for m in modules.values():
            m.train()

    t0 = time.perf_counter()
    if evaluate is not None and start == 0 and end > 0:
        evaluation(0)  # the untrained model, for curves that start at 0
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.final_lr)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        gen = step_generator(cfg.seed, step, device)
        with autocast:
            loss, key, logs = run_step(step, gen)
        done = step + 1
        logging = step % cfg.log_every == 0 or done == cfg.steps
        saving = done % cfg.ckpt_every == 0 or done == cfg.steps or done == end
        if logging or saving or not sync_free:
            mean_loss = dist.all_mean(loss.detach())
            if not torch.isfinite(mean_loss).all():
                bar.close()
                raise TrainingDiverged(
                    f"{desc}: the loss became {mean_loss.item()} at step {step}; no update was applied and the last "
                    f"good checkpoint ({ckpt if ckpt.exists() else 'none yet'}) is kept. Lower the learning rate "
                    f"(now {cfg.lr}) or check the data."
                )
        opt = optimizers[key]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        for name, m in modules.items():
            emas[name].update(m)
        if logging:
            record = {"step": step, "lr": lr, "opt": key, "loss": mean_loss.item(),
                      **{k: float(v) if isinstance(v, Tensor) else v for k, v in logs.items()},
                      "seconds": time.perf_counter() - t0}
            log(record)
            bar.set_postfix(loss=f"{mean_loss.item():.4f}", refresh=False)
        if evaluate is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
            evaluation(done)
        fault_point("step", done)
        if saving:
            checkpoint(done)
    bar.close()
    dist.barrier()  # the last checkpoint is on disk before any process reads it
    for m in modules.values():
        m.eval()
    return read_metrics(metrics_path)


def compile_blocks(module: nn.Module) -> int:
    """Compile every transformer block in ``module`` in place (``nn.Module.compile``: the
    parameter names, and so the checkpoints, stay as they are); returns how many.

    Regional compilation: the blocks (timm's ``Block`` and ``EvaBlock``) hold nearly all the FLOPs
    of every model here, compile once per distinct block shape, and leave the Python around them
    (masking, gathering, the random draws) eager. A block already compiled is left alone."""
    blocks = [m for m in module.modules() if isinstance(m, (Block, EvaBlock))]
    for blk in blocks:
        if getattr(blk, "_compiled_call_impl", None) is None:
            blk.compile()
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


# ------------------------------------------------------------------------------ trained artifacts
def load_weights(run_dir: str | Path, name: str, module: nn.Module, ema: bool = True) -> dict:
    """Load the (EMA or raw) weights of ``name`` from a run's checkpoint into ``module``; returns the
    checkpoint's metadata."""
    path = Path(run_dir) / "checkpoint.safetensors"
    tensors, meta = load_tensors(path)
    prefix = f"{'ema' if ema else 'model'}.{name}."
    _load_state(module, _under(tensors, prefix), path)
    return meta


def run_folder(data_dir: str | Path, name: str, config: Any) -> Path:
    """``<data_dir>/runs/<name>-<hash8>``: the folder of the training run that ``config`` defines
    (checkpoint, metrics; a finished run there is loaded instead of trained again)."""
    return Path(data_dir) / "runs" / f"{name}-{config_hash(config)[:8]}"


def artifact_path(data_dir: str | Path, name: str, config: Any) -> Path:
    """``<data_dir>/<name>-<hash8>.safetensors``: where the artifact made by ``config`` lives."""
    return Path(data_dir) / f"{name}-{config_hash(config)[:8]}.safetensors"


def save_artifact(data_dir: str | Path, name: str, config: Any, module: nn.Module, info: Mapping[str, Any]) -> Path:
    """Save a trained module for later chapters: weights and metadata (config, its full hash,
    ``info``) in one safetensors file, and the same metadata as a readable JSON beside it."""
    path = artifact_path(data_dir, name, config)
    meta = {"name": name, "config_hash": config_hash(config), "config": _jsonable(config), "info": _jsonable(info)}
    save_tensors(path, module.state_dict(), meta)
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def load_artifact(data_dir: str | Path, name: str, config: Any, module: nn.Module) -> dict | None:
    """Load the artifact made by exactly ``config`` into ``module`` and return its metadata; None
    when there is none (or its recorded hash differs, e.g. a file copied under a wrong name).

    A damaged file, or one whose tensors do not fit ``module``, raises
    :class:`copkit.io.DamagedFileError` naming the file and what to do.
    """
    path = artifact_path(data_dir, name, config)
    if not path.exists():
        return None
    remedy = (f"Delete {path} and {path.with_suffix('.json').name} beside it, then re-run the chapter or command "
              f"that saves the {name} artifact (its training run in {Path(data_dir) / 'runs'} is reused when intact).")
    tensors, meta = load_tensors(path, remedy=remedy)
    if meta.get("config_hash") != config_hash(config):
        return None
    _load_state(module, tensors, path, remedy)
    return meta


# ------------------------------------------------------------------------------ one entry for every model
def weight_decay_groups(named_parameters: Iterable[tuple[str, Tensor]], no_weight_decay: Iterable[str],
                        weight_decay: float) -> list[dict]:
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
        >>> [[p.shape for p in g["params"]] for g in weight_decay_groups(net.named_parameters(), (), 0.05)]
        [[torch.Size([3, 2])], [torch.Size([3]), torch.Size([3]), torch.Size([3])]]
    """
    exempt = set(no_weight_decay)
    decay, rest = [], []
    for name, p in named_parameters:
        (decay if p.ndim >= 2 and name not in exempt else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@dataclass(frozen=True)
class Recipe:
    """What :func:`fit` needs to know about one kind of model; every model module exposes one
    (``RECIPE``). ``data`` is the module's own data holder (tokens, images, orders, ...).

    Attributes:
        name: the run folder's prefix (``<data_dir>/runs/<name>-<hash8>``) and the key of the model
            configuration in the hashed run configuration.
        module: the key of the network's weights in the checkpoint (``model.<module>.``, ``ema.<module>.``).
        build: ``(model config, data) -> nn.Module`` with fresh weights (drawn after ``fit`` seeded torch).
        step: ``(network, model config, TrainConfig, data) -> step_fn`` for :func:`train`.
        parameters: ``network -> {optimiser key: [(name, parameter), ...]}``, the parameters each
            optimiser steps, in order (CoMAE: ``"f"``, the selector then the temperature, and
            ``"g"``); None: one optimiser keyed ``module`` over ``named_parameters()``. The order is
            the optimiser's (its checkpointed state is indexed by it; clipping sums norms in it).
        evaluate: ``(network, data) -> dict`` of validation numbers, logged every
            ``TrainConfig.eval_every`` steps and at the end; None: no evaluation.
        hashed: ``data -> dict`` of training choices held in ``data`` that are part of the run's
            hash (MAR's order kind); None: none.
        start: ``(network, state dict) -> None`` loads the weights a fine-tune starts from
            (``fit(..., init=...)``); None: ``load_state_dict`` (strict). The pruning baseline
            takes a plain ViT's weights into its ViT, its keep-score heads left as built.
    """

    name: str
    module: str
    build: Callable[[Any, Any], nn.Module]
    step: Callable[[nn.Module, Any, TrainConfig, Any], Callable]
    parameters: Callable[[nn.Module], Mapping[str, list[tuple[str, Tensor]]]] | None = None
    evaluate: Callable[[nn.Module, Any], dict] | None = None
    hashed: Callable[[Any], dict] | None = None
    start: Callable[[nn.Module, Mapping[str, Tensor]], None] | None = None

    def run_config(self, cfg: Any, tc: TrainConfig, data: Any, tag: Mapping[str, Any],
                   init: str | None = None) -> dict:
        """Everything that determines the trained model, what its run folder is named by: the model
        configuration, the training, ``tag`` (what the data is), the recipe's hashed choices and,
        for a fine-tune, the hash of the run it starts from."""
        config = {"model": self.name, self.name: cfg, "train": tc, "data": dict(tag)}
        if self.hashed is not None:
            config.update(self.hashed(data))
        if init is not None:
            config["init"] = init
        return config


@dataclass
class Fitted:
    """What :func:`fit` returns."""

    model: nn.Module  #: the EMA weights, in eval mode, on the training device
    metrics: list[dict]  #: the JSON lines of the run's metrics.jsonl
    config: dict  #: the run configuration (:meth:`Recipe.run_config`)
    hash: str  #: its :func:`config_hash` (64 hex digits); the run folder is named by the first 8
    folder: Path  #: ``<data_dir>/runs/<name>-<hash8>``: checkpoint, metrics, config.json


def optimizers(recipe: Recipe, model: nn.Module, tc: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """The AdamW optimisers of a model, by key (``recipe.parameters``), each with the groups of
    :func:`weight_decay_groups` for the model's ``no_weight_decay()`` (none when it has no such
    method), ``tc.weight_decay``, ``tc.lr`` and ``tc.betas``: what :func:`fit` trains with."""
    params = recipe.parameters(model) if recipe.parameters else {recipe.module: list(model.named_parameters())}
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return {key: torch.optim.AdamW(weight_decay_groups(named, exempt, tc.weight_decay), lr=tc.lr, betas=tc.betas)
            for key, named in params.items()}


def fit(recipe: Recipe, cfg: Any, tc: TrainConfig, data: Any, tag: Mapping[str, Any], data_dir: str | Path,
        init: tuple[str, Mapping[str, Tensor]] | None = None, device: torch.device | str = "cpu",
        desc: str | None = None, progress: bool = True, stop_after: int | None = None,
        evaluate_ema: bool = False) -> Fitted:
    """Train a model of kind ``recipe`` (configuration ``cfg``) with ``tc`` on ``data`` into its
    run folder ``<data_dir>/runs/<recipe.name>-<hash8>`` (:func:`run_folder` of
    :meth:`Recipe.run_config`), resuming from its checkpoint when it holds one (a finished run is
    only loaded), and return the network holding its EMA weights, in eval mode.

    In this order: ``torch.manual_seed(tc.seed)``; ``recipe.build`` on ``device``; the weights of
    ``init = (run hash, state dict)`` when fine-tuning (the hash joins the run configuration);
    one AdamW per optimiser key with the groups of :func:`weight_decay_groups` (the model's
    ``no_weight_decay()`` exemptions), ``tc.lr`` and ``tc.betas``; :func:`train` with
    ``recipe.step`` and ``recipe.evaluate``; then the EMA weights from the checkpoint. Parameters a
    step function froze for a step (CoMAE's g on f's turns) are left trainable as they were.
    ``tag`` describes the data (what it is, how many images, the CoMAE of its orders) and is part of
    the hash; ``stop_after`` stops after that many steps as if killed (for tests);
    ``evaluate_ema`` evaluates the EMA weights (:func:`train`).
    """
    config = recipe.run_config(cfg, tc, data, tag, init[0] if init is not None else None)
    digest = config_hash(config)
    folder = run_folder(data_dir, recipe.name, config)
    torch.manual_seed(tc.seed)
    model = recipe.build(cfg, data).to(device)
    if init is not None:
        (recipe.start or (lambda net, state: net.load_state_dict(state)))(model, init[1])
    trainable = [p.requires_grad for p in model.parameters()]
    evaluate = None if recipe.evaluate is None else (lambda step: recipe.evaluate(model, data))
    metrics = train({recipe.module: model}, optimizers(recipe, model, tc), recipe.step(model, cfg, tc, data), tc,
                    folder, config=config, evaluate=evaluate, desc=desc or recipe.name, stop_after=stop_after,
                    device=device, progress=progress, evaluate_ema=evaluate_ema)
    for p, flag in zip(model.parameters(), trainable):
        p.requires_grad_(flag)
    load_weights(folder, recipe.module, model, ema=True)
    return Fitted(model.eval(), metrics, config, digest, folder)
