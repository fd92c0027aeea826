"""A training run's files, written and read back; never a pickle.

A run lives in ``<data_dir>/runs/<name>-<hash8>/`` (:func:`run_folder`), named by the hash of its
whole configuration (:func:`copkit.config.config_hash`), and holds

- ``config.json``: that configuration and its full hash, written when the run starts;
- ``checkpoint.safetensors``: the raw weights, their EMA and the optimisers' state, with JSON
  metadata (the configuration's hash, the step) inside the same file, written atomically
  (:func:`save_checkpoint`; :func:`resume` reads it back, :func:`run_weights` and
  :func:`load_weights` the weights alone);
- ``metrics.jsonl``: one JSON line per logged step (:func:`append_metrics`, :func:`read_metrics`).

A finished run can be *shipped* (:func:`ship_run`): its EMA weights alone, its metrics and its
configuration copied to ``<data_dir>/pretrained/runs/<name>-<hash8>/`` (:func:`shipped_folder`),
which is committed, so that a fresh clone loads what a chapter trained instead of training it
again (:func:`copkit.train.fit` looks there when the run folder holds no checkpoint).

:func:`save_tensors` and :func:`load_tensors` are the safetensors format underneath, shared with
the shipped base models (:mod:`copkit.pretrained`); a file that is truncated, corrupt or not
copkit's raises :class:`copkit.io.DamagedFileError`, and so do tensors that do not fit the
network they are loaded into (:func:`load_state`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .config import config_hash, jsonable
from .io import DamagedFileError, atomic_write_bytes, atomic_write_json, atomic_write_text
from .step import cosine_lr

__all__ = ["CHECKPOINT", "METRICS", "WEIGHTS", "run_folder", "shipped_folder", "save_tensors",
           "load_tensors", "load_state", "save_checkpoint", "resume", "extend", "run_weights",
           "load_weights", "ship_run", "load_shipped", "run_record", "cache_file", "note", "used",
           "append_metrics", "read_metrics"]

CHECKPOINT = "checkpoint.safetensors"  #: a run folder's checkpoint
METRICS = "metrics.jsonl"  #: a run folder's metrics, one JSON line per logged step
WEIGHTS = "weights.safetensors"  #: a shipped run's EMA weights (:func:`ship_run`)


def run_folder(data_dir: str | Path, name: str, config: Any) -> Path:
    """``<data_dir>/runs/<name>-<hash8>``: the folder of the training run that ``config`` defines
    (checkpoint, metrics; a finished run there is loaded instead of trained again)."""
    return Path(data_dir) / "runs" / f"{name}-{config_hash(config)[:8]}"


def shipped_folder(data_dir: str | Path, name: str, config: Any) -> Path:
    """``<data_dir>/pretrained/runs/<name>-<hash8>``: where the finished run that ``config``
    defines is shipped (:func:`ship_run`): committed with the book, loaded instead of trained."""
    return run_folder(Path(data_dir) / "pretrained", name, config)


def _same_config(path: Path, meta: Mapping[str, Any], digest: str) -> None:
    """Refuse a file (a checkpoint, shipped weights, a shipped run's config.json) whose recorded
    configuration hash is not ``digest``, before anything is loaded from it."""
    if meta.get("config_hash") != digest:
        raise DamagedFileError(path, "written by another configuration (hash "
                                     f"{str(meta.get('config_hash', '?'))[:8]}, this run "
                                     f"{digest[:8]})")


# ------------------------------------------------------------------------------ safetensors files
def save_tensors(path: str | Path, tensors: Mapping[str, Tensor],
                 metadata: Mapping[str, Any]) -> Path:
    """Write tensors and JSON metadata into one safetensors file, atomically."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = st_save(data, metadata={"json": json.dumps(jsonable(metadata), sort_keys=True)})
    return atomic_write_bytes(path, blob)


def load_tensors(path: str | Path, device: torch.device | str = "cpu",
                 remedy: str | None = None,
                 metadata_only: bool = False) -> tuple[dict[str, Tensor], dict]:
    """Read a file written by :func:`save_tensors`: (tensors, metadata). No pickle is involved.
    ``metadata_only`` reads the header alone and returns no tensors (a checkpoint's step and
    configuration without its weights).

    A file that is truncated, corrupt or not written by :func:`save_tensors` (no copkit metadata)
    raises :class:`copkit.io.DamagedFileError` naming it and saying what to do (``remedy``; by
    default from the file's name: delete the run folder of a checkpoint, or the file, and run
    again what made it). A missing file raises FileNotFoundError.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            raw = (fh.metadata() or {}).get("json")
            if raw is None:
                raise DamagedFileError(path, "a safetensors file without copkit's metadata: not a "
                                             "checkpoint or model file copkit wrote", remedy)
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise DamagedFileError(path, "its metadata is not a JSON object: not a file copkit "
                                             "wrote", remedy)
            tensors = {} if metadata_only else {k: fh.get_tensor(k) for k in fh.keys()}
    except (FileNotFoundError, DamagedFileError):
        raise
    # JSONDecodeError is a ValueError
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DamagedFileError(path, "cannot be read, it is truncated or corrupt "
                                     f"({type(err).__name__}: {err})",
                               remedy) from err
    return tensors, meta


def load_state(module: nn.Module, state: Mapping[str, Tensor], path: str | Path,
               remedy: str | None = None) -> None:
    """``module.load_state_dict(state)``, for tensors read from the file ``path``; tensors that do
    not fit the module (the code changed under the file, or the file is another model's) raise
    :class:`copkit.io.DamagedFileError` naming the file, not a raw load_state_dict error."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise DamagedFileError(path, f"its tensors do not fit {type(module).__name__} ({first})",
                               remedy) from err


def _under(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose key starts with ``prefix``, keyed without it."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------ checkpoints
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


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: Mapping[str, Tensor],
                    meta: dict) -> None:
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


def save_checkpoint(run_dir: str | Path, modules: Mapping[str, nn.Module], emas: Mapping[str, Any],
                    optimizers: Mapping[str, torch.optim.Optimizer], step: int,
                    config: Any) -> Path:
    """Write ``run_dir/checkpoint.safetensors`` atomically: for each network ``name`` its weights
    (``model.<name>.``) and EMA weights (``ema.<name>.``, from ``emas[name].shadow``), each
    optimiser's moments (``opt.<key>.``), and as metadata the run configuration, its hash, the
    step reached and the optimisers' scalar state."""
    tensors: dict[str, Tensor] = {}
    opt_meta = {}
    for name, m in modules.items():
        tensors.update({f"model.{name}.{k}": v for k, v in m.state_dict().items()})
        tensors.update({f"ema.{name}.{k}": v for k, v in emas[name].shadow.items()})
    for key, opt in optimizers.items():
        t, m = _optimizer_tensors(opt, f"opt.{key}")
        tensors.update(t)
        opt_meta[key] = m
    meta = {"config_hash": config_hash(config), "config": jsonable(config), "step": step,
            "optimizers": opt_meta}
    return save_tensors(Path(run_dir) / CHECKPOINT, tensors, meta)


def resume(run_dir: str | Path, config: Any, modules: Mapping[str, nn.Module],
           emas: Mapping[str, Any], optimizers: Mapping[str, torch.optim.Optimizer],
           device: torch.device | str, main: bool = True) -> int:
    """The step a run starts from: its checkpoint's, with the networks, EMA weights and optimisers
    loaded from it; or 0 for a new run, whose ``config.json`` is written. Only the ``main`` process
    writes: ``config.json``, and the metrics with the lines logged after the checkpoint dropped
    (those steps will be run again).

    The checkpoint must have been written by ``config`` (its hash is checked before any weight is
    loaded, so a foreign checkpoint is named as such, as a :class:`copkit.io.DamagedFileError`)."""
    run_dir = Path(run_dir)
    path, metrics = run_dir / CHECKPOINT, run_dir / METRICS
    digest = config_hash(config)
    if not path.exists():
        if main:
            atomic_write_json(run_dir / "config.json",
                              {"config_hash": digest, "config": jsonable(config)})
            metrics.unlink(missing_ok=True)
        return 0
    # Read on the host: load_state_dict copies weights and optimiser moments to the parameters'
    # device but leaves each optimiser's ``step`` count on the host, as a fresh optimiser keeps it
    # (a step count on a GPU would make every optimiser step wait for the GPU to read it).
    tensors, meta = load_tensors(path, device="cpu")
    _same_config(path, meta, digest)
    for name, m in modules.items():
        load_state(m, _under(tensors, f"model.{name}."), path)
        emas[name].shadow = {k: v.to(device) for k, v in _under(tensors, f"ema.{name}.").items()}
    try:
        for key, opt in optimizers.items():
            _load_optimizer(opt, f"opt.{key}", tensors, meta["optimizers"][key])
    except (KeyError, ValueError) as err:
        raise DamagedFileError(path, "its optimiser state does not fit this run's "
                                     f"({type(err).__name__}: {err})") from err
    step = int(meta["step"])
    if main:
        kept = [r for r in read_metrics(metrics, partial_ok=True)
                if r["step"] < step or (r["step"] == step and r.get("eval"))]
        atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
    return step


def extend(run_dir: str | Path, new_run_dir: str | Path, config: Any) -> int:
    """Start ``new_run_dir``, the run of ``config``, from ``run_dir``'s checkpoint, when the two
    configurations differ only in their length and learning-rate schedule (``train.steps``,
    ``final_lr``, ``decay_from``): a run found too short (its held-out curve still falling) goes on
    instead of starting over. Returns the step it goes on from.

    Going on is the same as having trained the longer run from the start only if every step taken
    so far is the step the longer run takes: the data order does not depend on the length
    (:func:`copkit.recipe.batch_indices`), and the learning rate of every step taken must be the
    same under both schedules (checked step by step), which holds for a rate held after its warm-up
    (``final_lr == lr``), continued either held or decaying from a later step (``decay_from``).
    The checkpoint and metrics are copied with the new configuration and hash (the old run folder
    is left as it is); anything else is refused with the difference named."""
    run_dir, new_run_dir = Path(run_dir), Path(new_run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to extend")
    tensors, meta = load_tensors(path, device="cpu")
    old, new = meta.get("config", {}), jsonable(config)

    def flat(c: Any, prefix: str = "") -> dict:
        if not isinstance(c, dict):
            return {prefix: c}
        return {k: v for key, val in c.items() for k, v in flat(val, f"{prefix}{key}.").items()}

    fo, fn = flat(old), flat(new)
    # the schedule is checked step by step below
    schedule = ("train.steps.", "train.final_lr.", "train.decay_from.")
    differ = sorted(k.rstrip(".") for k in set(fo) | set(fn)
                    if fo.get(k) != fn.get(k) and k not in schedule)
    if differ:
        raise ValueError(f"{run_dir} cannot be extended to this configuration: it differs in "
                         f"{', '.join(differ)}, not only in its length and learning-rate "
                         "schedule")
    train, step = new["train"], int(meta["step"])
    if train["steps"] <= step:
        raise ValueError(f"{run_dir} is at step {step}; the new run must be longer "
                         f"(train.steps {train['steps']})")
    def rate(c: dict, t: int) -> float:
        tc = c["train"]
        return cosine_lr(t, tc["steps"], tc["lr"], tc.get("warmup_steps", 0),
                         tc.get("final_lr", 0.0), tc.get("decay_from"))

    moved = next((t for t in range(step) if rate(old, t) != rate(new, t)), None)
    if moved is not None:
        raise ValueError(f"{run_dir} took step {moved} at learning rate {rate(old, moved):.3g}, "
                         f"the longer run would at {rate(new, moved):.3g}: a rate that decays to "
                         "final_lr at the last step depends on the length; hold it "
                         "(final_lr == lr, or decay_from after the steps taken) to extend a run")
    new_run_dir.mkdir(parents=True, exist_ok=True)
    digest = config_hash(config)
    save_tensors(new_run_dir / CHECKPOINT, tensors, {**meta, "config_hash": digest, "config": new,
                                                      "extended_from": meta.get("config_hash")})
    atomic_write_text(new_run_dir / METRICS, (run_dir / METRICS).read_text()
                      if (run_dir / METRICS).exists() else "")
    atomic_write_json(new_run_dir / "config.json", {"config_hash": digest, "config": new,
                                                    "extended_from": meta.get("config_hash")})
    return step


def run_weights(run_dir: str | Path, name: str, ema: bool = True) -> tuple[dict[str, Tensor], dict]:
    """The (EMA or raw) weights of network ``name`` in a run's checkpoint, as a state dict, and the
    checkpoint's metadata: what a fine-tune from a run starts from."""
    tensors, meta = load_tensors(Path(run_dir) / CHECKPOINT)
    return _under(tensors, f"{'ema' if ema else 'model'}.{name}."), meta


def load_weights(run_dir: str | Path, name: str, module: nn.Module, ema: bool = True) -> dict:
    """Load the (EMA or raw) weights of ``name`` from a run's checkpoint into ``module``; returns
    the checkpoint's metadata."""
    state, meta = run_weights(run_dir, name, ema)
    load_state(module, state, Path(run_dir) / CHECKPOINT)
    return meta


# ------------------------------------------------------------------------------ shipped runs
def ship_run(run_dir: str | Path, dest: str | Path, weights: bool = True) -> Path:
    """Copy a finished run into ``dest`` (its :func:`shipped_folder`): the EMA weights of every
    network, without the raw weights and optimiser state (a third of the checkpoint or less), in
    ``weights.safetensors`` with the configuration's hash and the step; ``metrics.jsonl`` and
    ``config.json`` as they are. ``weights=False`` ships the metrics and configuration alone, the
    record of a run whose curve a chapter shows but whose network it does not need
    (:func:`run_record`). Each file is written atomically. A run that has not reached its
    configured number of steps is refused: shipping it would freeze a half-trained model."""
    run_dir, dest = Path(run_dir), Path(dest)
    tensors, meta = load_tensors(run_dir / CHECKPOINT)
    steps = (meta.get("config") or {}).get("train", {}).get("steps")
    if steps is None or int(meta["step"]) < int(steps):
        raise ValueError(f"{run_dir}: the run is at step {meta['step']} of {steps}; finish it "
                         "(run the chapter again) before shipping it")
    if weights:
        ema = {k: v for k, v in tensors.items() if k.startswith("ema.")}
        save_tensors(dest / WEIGHTS, ema, {"config_hash": meta["config_hash"],
                                           "step": meta["step"], "shipped_from": run_dir.name})
    atomic_write_text(dest / METRICS, (run_dir / METRICS).read_text())
    atomic_write_text(dest / "config.json", (run_dir / "config.json").read_text())
    return dest


def load_shipped(folder: str | Path, config: Any, name: str, module: nn.Module) -> list[dict]:
    """Load the EMA weights of network ``name`` from a shipped run (:func:`ship_run`) into
    ``module`` and return its metrics. The file must have been written by ``config`` (its hash
    is checked before any weight is loaded)."""
    folder = Path(folder)
    path = folder / WEIGHTS
    tensors, meta = load_tensors(path, remedy=f"delete {folder} and run the chapter again; it "
                                              "trains the run and you can ship it anew")
    _same_config(path, meta, config_hash(config))
    load_state(module, _under(tensors, f"ema.{name}."), path)
    return read_metrics(folder / METRICS)


def run_record(data_dir: str | Path, name: str, config: Any) -> list[dict] | None:
    """The metrics of the finished run that ``config`` defines, without its network: from its run
    folder when the checkpoint there has reached the configured steps, else from its shipped copy
    (weights or not, :func:`ship_run`) when that copy's ``config.json`` has the configuration's
    hash; None when neither holds it (train it with :func:`copkit.train.fit`). The run is noted
    for the chapter's results file (:func:`used`)."""
    digest = config_hash(config)
    folder, shipped = run_folder(data_dir, name, config), shipped_folder(data_dir, name, config)
    run_id = f"{name}-{digest[:8]}"
    if (folder / CHECKPOINT).exists():
        meta = load_tensors(folder / CHECKPOINT, metadata_only=True)[1]
        if meta.get("config_hash") == digest and int(meta["step"]) >= int(
                meta["config"]["train"]["steps"]):
            note("records", run_id, folder)
            return read_metrics(folder / METRICS)
        return None
    if (shipped / "config.json").exists():
        _same_config(shipped / "config.json",
                     json.loads((shipped / "config.json").read_text()), digest)
        note("records", run_id, shipped)
        return read_metrics(shipped / METRICS)
    return None


def cache_file(data_dir: str | Path, filename: str) -> Path:
    """Where a chapter's cache of computed numbers (scores of generated images, say) is read:
    ``<data_dir>/runs/<filename>`` when it exists (or is to be written), else its shipped copy
    ``<data_dir>/pretrained/runs/<filename>``. The file is noted for the chapter's results file
    (:func:`used`), so that ``tools/ship_runs.py`` ships it. Write new entries to the first."""
    local = Path(data_dir) / "runs" / filename
    shipped = Path(data_dir) / "pretrained" / "runs" / filename
    path = shipped if not local.exists() and shipped.exists() else local
    note("files", filename, path)
    return path


# What this process used, by kind, id -> path: what copkit.results.write_results lists for
# tools/ship_runs.py (see used()).
_USED: dict[str, dict[str, Path]] = {"runs": {}, "records": {}, "files": {}}


def note(kind: str, key: str, path: Path) -> None:
    """Note that this process used ``key`` (a run id or a file name) of ``kind``."""
    _USED[kind][key] = Path(path)


def used() -> dict[str, dict[str, Path]]:
    """What this process used so far, by kind: ``runs`` (networks :func:`copkit.train.fit`
    returned), ``records`` (runs whose metrics alone were read, :func:`run_record`) and ``files``
    (caches, :func:`cache_file`), each ``id -> path``."""
    return {kind: dict(v) for kind, v in _USED.items()}


# ------------------------------------------------------------------------------ metrics
def append_metrics(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` to a metrics file as one JSON line."""
    with Path(path).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


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
