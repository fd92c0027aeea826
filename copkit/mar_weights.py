"""MAR's released checkpoints (github LTH14/mar) as copkit runs, so that CMAR can fine-tune the
released MAR-B as the paper does (Sec. 3.3) instead of training it again (~150 H200-hours).

MAR saves ``checkpoint-last.pth``, a pickle of ``model`` and ``model_ema`` (state dicts), ``args``
(its argparse options), the optimiser and scaler states and the epoch. This module

- reads it with torch's weights-only unpickler (:func:`read_mar_checkpoint`): tensors, plain
  containers and ``argparse.Namespace`` are accepted, code never runs;
- renames MAR's module paths to :class:`copkit.cmar.MAR`'s (:func:`convert_state_dict`; the
  transformer blocks are timm ``Block`` in both, so only the prefixes change);
- reads the architecture off the tensors' shapes (:func:`config_from_mar`; the number of heads,
  which no shape shows, from ``args.model`` or given), with MAR's own diffusion head: timestep
  embedding of 256 frequencies, learned variance, no clipping of the predicted latent;
- writes a run folder (:func:`convert_mar_checkpoint`: ``checkpoint.safetensors`` with the raw and
  EMA weights, then ``config.json``) that ``train-cmar``'s ``init`` and ``sample-cmar``'s
  ``mar_run`` take like a run trained here.

Command line: ``copkit convert-mar checkpoint-last.pth data/runs/mar-b-released``.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .checkpoint import save_tensors
from .cmar import MAR, MARConfig
from .config import config_hash, jsonable
from .io import atomic_write_json, file_sha256

__all__ = ["MAR_HEADS", "read_mar_checkpoint", "convert_state_dict", "config_from_mar",
           "convert_mar_checkpoint"]

#: heads of MAR's named models (models/mar.py); no tensor shape shows them
MAR_HEADS = {"mar_base": 12, "mar_large": 16, "mar_huge": 16}

# MAR's module path -> copkit.cmar.MAR's, first match wins; keys that match none are refused.
_RENAMES = [
    (r"encoder_pos_embed_learned$", "enc_pos"),
    (r"decoder_pos_embed_learned$", "dec_pos"),
    (r"diffusion_pos_embed_learned$", "diff_pos"),
    (r"encoder_blocks\.", "encoder."),
    (r"decoder_blocks\.", "decoder."),
    (r"encoder_norm\.", "enc_norm."),
    (r"decoder_norm\.", "dec_norm."),
    (r"decoder_embed\.", "dec_embed."),
    (r"(class_emb\.|fake_latent$|z_proj\.|z_proj_ln\.|mask_token$)", r"\1"),
    (r"diffloss\.net\.time_embed\.mlp\.", "diffloss.net.time."),
    (r"diffloss\.net\.cond_embed\.", "diffloss.net.cond."),
    (r"diffloss\.net\.input_proj\.", "diffloss.net.inp."),
    (r"diffloss\.net\.res_blocks\.(\d+)\.in_ln\.", r"diffloss.net.blocks.\1.norm."),
    (r"diffloss\.net\.res_blocks\.(\d+)\.mlp\.", r"diffloss.net.blocks.\1.mlp."),
    (r"diffloss\.net\.res_blocks\.(\d+)\.adaLN_modulation\.", r"diffloss.net.blocks.\1.ada."),
    (r"diffloss\.net\.final_layer\.adaLN_modulation\.", "diffloss.net.final_ada."),
    (r"diffloss\.net\.final_layer\.linear\.", "diffloss.net.out."),
]


def read_mar_checkpoint(path: str | Path) -> dict[str, Any]:
    """MAR's ``.pth`` checkpoint as a dict, read with ``torch.load(weights_only=True)``: tensors and
    plain containers, plus ``argparse.Namespace`` for ``args`` (returned as a dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give MAR's checkpoint (e.g. "
                                "pretrained_models/mar/mar_base/checkpoint-last.pth)")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # the weights-only unpickler names what it refused
            raise ValueError(f"{path}: not a checkpoint torch's weights-only reader accepts: "
                             f"{err}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path}: not a MAR checkpoint (expected a dict with a 'model' state "
                         "dict; MAR's main_mar.py writes model, model_ema, optimizer, epoch, "
                         "scaler and args)")
    args = ckpt.get("args")
    ckpt["args"] = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return ckpt


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MAR's state dict with copkit's names (a ``module.`` prefix from DDP is dropped). A key of no
    known MAR module is refused, so nothing is silently left behind."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        for pattern, repl in _RENAMES:
            if re.match(pattern, key):
                out[re.sub("^" + pattern, repl, key, count=1)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError("keys of no MAR module: "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return out


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def config_from_mar(state: Mapping[str, Tensor], args: Mapping[str, Any] | None = None,
                    heads: int | None = None) -> MARConfig:
    """The :class:`~copkit.cmar.MARConfig` of a MAR state dict (in copkit's names, as
    :func:`convert_state_dict` returns): sizes from the tensors' shapes, the training options
    (mask ratio, label drop, dropout, diffusion batch multiplier) from MAR's ``args`` when present,
    else MAR's defaults; ``heads`` from the argument, else ``args['model']``."""
    args = dict(args or {})
    heads = heads or MAR_HEADS.get(str(args.get("model")))
    if heads is None:
        raise ValueError(f"the number of attention heads is not in the weights and args.model is "
                         f"{args.get('model')!r}, none of {sorted(MAR_HEADS)}; give it (--heads)")
    n_classes, width = state["class_emb.weight"].shape
    if state["dec_embed.weight"].shape[0] != width:
        raise ValueError(f"decoder width {state['dec_embed.weight'].shape[0]} != encoder width "
                         f"{width}: copkit.cmar.MAR has one width for both")
    n = state["diff_pos"].shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens are not a square grid")
    token_dim = state["z_proj.weight"].shape[1]
    out = state["diffloss.net.out.weight"].shape[0]
    if out not in (token_dim, 2 * token_dim):
        raise ValueError(f"the diffusion head outputs {out} channels for {token_dim}-dim tokens")
    dropout = float(args.get("proj_dropout", 0.1))
    return MARConfig(
        grid=(side, side), token_dim=token_dim, n_classes=n_classes, width=width,
        enc_depth=_depth(state, "encoder."), dec_depth=_depth(state, "decoder."), heads=heads,
        mlp_ratio=state["encoder.0.mlp.fc1.weight"].shape[0] / width,
        buffer=state["enc_pos"].shape[1] - n,
        head_width=state["diffloss.net.inp.weight"].shape[0],
        head_depth=_depth(state, "diffloss.net.blocks."),
        diffusion_batch_mul=int(args.get("diffusion_batch_mul", 4)),
        mask_ratio_min=float(args.get("mask_ratio_min", 0.7)),
        label_drop=float(args.get("label_drop_prob", 0.1)), dropout=dropout,
        time_freq=state["diffloss.net.time.0.weight"].shape[1], learn_sigma=out == 2 * token_dim,
        clip_x0=False)


def convert_mar_checkpoint(src: str | Path, out: str | Path, heads: int | None = None) -> Path:
    """Convert MAR's checkpoint ``src`` into the run folder ``out`` (see the module docstring);
    returns ``out``. The weights are checked by loading them strictly into a fresh
    :class:`~copkit.cmar.MAR`; a checkpoint without ``model_ema`` uses ``model`` for both."""
    ckpt = read_mar_checkpoint(src)
    raw = convert_state_dict(ckpt["model"])
    ema = convert_state_dict(ckpt["model_ema"]) if isinstance(ckpt.get("model_ema"), dict) else raw
    cfg = config_from_mar(raw, ckpt["args"], heads)
    probe = MAR(cfg)
    for name, state in (("model", raw), ("model_ema", ema)):
        try:
            probe.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{src}: its {name} does not fit {cfg}: {err}") from None
    config = {"model": "mar", "mar": cfg,
              "converted_from": {"file": Path(src).name, "sha256": file_sha256(src)[:16],
                                 "epoch": ckpt.get("epoch"), "ema": ema is not raw}}
    out = Path(out)
    tensors = {**{f"model.mar.{k}": v for k, v in raw.items()},
               **{f"ema.mar.{k}": v for k, v in ema.items()}}
    save_tensors(out / "checkpoint.safetensors", tensors,
                 {"converted_from": config["converted_from"]})
    atomic_write_json(out / "config.json",
                      {"config_hash": config_hash(config), "config": jsonable(config)})
    return out
