"""copkit.mar_weights: a checkpoint in the layout MAR's code saves (module names and shapes as
LTH14/mar's MAR and SimpleMLPAdaLN make them, written out here by hand) converts into a run that
loads strictly, computes MAR's diffusion head, refuses what it cannot place, and is taken by
train-cmar (init) and sample-cmar (mar_run)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_cli import make_image_folder, write

from copkit.cmar import MAR, MARConfig
from copkit.mar_weights import config_from_mar, convert_state_dict, read_mar_checkpoint

# D: 4x4 RGB pixel patches
W, DEPTH_E, DEPTH_D, BUF, N, D, HW, HD, FREQ = 32, 2, 1, 2, 4, 48, 24, 2, 256


def mar_layout(seed: int = 0, W=W, DEPTH_E=DEPTH_E, DEPTH_D=DEPTH_D, BUF=BUF, N=N, D=D, HW=HW,
               HD=HD, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict MAR's ``MAR(...)`` would save for these sizes (class_emb is 1000 wide in
    MAR)."""
    shapes = {"class_emb.weight": (1000, W), "fake_latent": (1, W), "z_proj.weight": (W, D),
              "z_proj.bias": (W,), "z_proj_ln.weight": (W,), "z_proj_ln.bias": (W,),
              "encoder_pos_embed_learned": (1, N + BUF, W), "encoder_norm.weight": (W,),
              "encoder_norm.bias": (W,), "decoder_embed.weight": (W, W), "decoder_embed.bias": (W,),
              "mask_token": (1, 1, W), "decoder_pos_embed_learned": (1, N + BUF, W),
              "decoder_norm.weight": (W,), "decoder_norm.bias": (W,),
              "diffusion_pos_embed_learned": (1, N, W),
              "diffloss.net.time_embed.mlp.0.weight": (HW, FREQ),
              "diffloss.net.time_embed.mlp.0.bias": (HW,),
              "diffloss.net.time_embed.mlp.2.weight": (HW, HW),
              "diffloss.net.time_embed.mlp.2.bias": (HW,),
              "diffloss.net.cond_embed.weight": (HW, W), "diffloss.net.cond_embed.bias": (HW,),
              "diffloss.net.input_proj.weight": (HW, D), "diffloss.net.input_proj.bias": (HW,),
              "diffloss.net.final_layer.adaLN_modulation.1.weight": (2 * HW, HW),
              "diffloss.net.final_layer.adaLN_modulation.1.bias": (2 * HW,),
              "diffloss.net.final_layer.linear.weight": (2 * D, HW),
              "diffloss.net.final_layer.linear.bias": (2 * D,)}
    for stack, depth in (("encoder_blocks", DEPTH_E), ("decoder_blocks", DEPTH_D)):
        for i in range(depth):
            p = f"{stack}.{i}."
            shapes.update({p + "norm1.weight": (W,), p + "norm1.bias": (W,),
                           p + "attn.qkv.weight": (3 * W, W), p + "attn.qkv.bias": (3 * W,),
                           p + "attn.proj.weight": (W, W), p + "attn.proj.bias": (W,),
                           p + "norm2.weight": (W,), p + "norm2.bias": (W,),
                           p + "mlp.fc1.weight": (4 * W, W), p + "mlp.fc1.bias": (4 * W,),
                           p + "mlp.fc2.weight": (W, 4 * W), p + "mlp.fc2.bias": (W,)})
    for i in range(HD):
        p = f"diffloss.net.res_blocks.{i}."
        shapes.update({p + "in_ln.weight": (HW,), p + "in_ln.bias": (HW,),
                       p + "mlp.0.weight": (HW, HW), p + "mlp.0.bias": (HW,),
                       p + "mlp.2.weight": (HW, HW), p + "mlp.2.bias": (HW,),
                       p + "adaLN_modulation.1.weight": (3 * HW, HW),
                       p + "adaLN_modulation.1.bias": (3 * HW,)})
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    return {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}


def save_mar_checkpoint(path: Path, model: str | None = None, **kw) -> Path:
    """As MAR's misc.save_model writes it: model, model_ema, optimizer, epoch, scaler, args."""
    args = argparse.Namespace(model=model, diffusion_batch_mul=4, mask_ratio_min=0.7,
                              label_drop_prob=0.1, proj_dropout=0.1, attn_dropout=0.1,
                              output_dir="out", img_size=256)
    ckpt = {"model": mar_layout(0), "model_ema": mar_layout(1),
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 399,
            "scaler": {"scale": 65536.0}, "args": args, **kw}
    torch.save(ckpt, path)
    return path


def mar_head(sd: dict[str, torch.Tensor], x, t, c):
    """MAR's SimpleMLPAdaLN.forward written from its definition, on MAR's own key names."""
    def lin(name, h):
        return F.linear(h, sd[name + ".weight"], sd[name + ".bias"])

    half = FREQ // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    temb = lin("diffloss.net.time_embed.mlp.2", F.silu(lin("diffloss.net.time_embed.mlp.0",
                                                         torch.cat([torch.cos(args),
                                                                    torch.sin(args)], -1))))
    y = temb + lin("diffloss.net.cond_embed", c)
    h = lin("diffloss.net.input_proj", x)
    for i in range(HD):
        p = f"diffloss.net.res_blocks.{i}."
        shift, scale, gate = lin(p + "adaLN_modulation.1", F.silu(y)).chunk(3, -1)
        u = (F.layer_norm(h, (HW,), sd[p + "in_ln.weight"], sd[p + "in_ln.bias"], 1e-6)
             * (1 + scale) + shift)
        h = h + gate * lin(p + "mlp.2", F.silu(lin(p + "mlp.0", u)))
    shift, scale = lin("diffloss.net.final_layer.adaLN_modulation.1", F.silu(y)).chunk(2, -1)
    return lin("diffloss.net.final_layer.linear",
               F.layer_norm(h, (HW,), eps=1e-6) * (1 + scale) + shift)


def test_the_state_dict_converts_completely_and_the_head_computes_mars():
    sd = mar_layout()
    ours = convert_state_dict(sd)
    cfg = config_from_mar(ours, {"model": None}, heads=4)
    assert cfg == MARConfig(grid=(2, 2), token_dim=D, n_classes=1000, width=W, enc_depth=DEPTH_E,
                            dec_depth=DEPTH_D, heads=4, buffer=BUF, head_width=HW, head_depth=HD,
                            dropout=0.1, time_freq=FREQ, learn_sigma=True, clip_x0=False)
    model = MAR(cfg)
    model.load_state_dict(ours)  # strict: every key placed, every shape right
    torch.testing.assert_close(model.enc_pos, sd["encoder_pos_embed_learned"])
    torch.testing.assert_close(model.decoder[0].mlp.fc2.weight,
                               sd["decoder_blocks.0.mlp.fc2.weight"])
    g = torch.Generator().manual_seed(2)
    x, c, t = torch.randn(7, D,
                          generator=g), torch.randn(7, W,
                                                    generator=g), torch.randint(0, 1000, (7,),
                                                                                generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model.diffloss.net(x, t, c), mar_head(sd, x, t, c), rtol=1e-5,
                                   atol=1e-5)
    # a DDP prefix is dropped; a key of no MAR module is refused by name
    assert convert_state_dict({"module.mask_token": sd["mask_token"]}).keys() == {"mask_token"}
    with pytest.raises(ValueError, match="vae.encoder.conv_in.weight"):
        convert_state_dict({**sd, "vae.encoder.conv_in.weight": torch.zeros(1)})


def test_heads_come_from_args_model_or_must_be_given():
    ours = convert_state_dict(mar_layout())
    assert config_from_mar(ours, {"model": "mar_base"}).heads == 12
    assert config_from_mar(ours, {"model": "mar_huge"}).heads == 16
    with pytest.raises(ValueError, match="--heads"):
        config_from_mar(ours, {"model": "my_mar"})


def test_checkpoint_is_read_weights_only_and_refuses_code(tmp_path):
    ckpt = read_mar_checkpoint(save_mar_checkpoint(tmp_path / "ok.pth", "mar_base"))
    assert ckpt["args"]["model"] == "mar_base" and ckpt["epoch"] == 399

    class Payload:  # an object whose unpickling would run code
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": {}, "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        read_mar_checkpoint(tmp_path / "evil.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a MAR checkpoint"):
        read_mar_checkpoint(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint-last.pth"):
        read_mar_checkpoint(tmp_path / "missing.pth")


def test_converted_run_is_sampled_and_fine_tuned_by_the_stages(tmp_path, capsys):
    from copkit.checkpoint import load_tensors
    from copkit.cli import main

    src = save_mar_checkpoint(tmp_path / "checkpoint-last.pth")
    run = tmp_path / "data" / "runs" / "mar-released"
    # args.model is None: the heads are needed
    assert main(["convert-mar", str(src), str(run)]) == 2
    assert "--heads" in capsys.readouterr().err and not run.exists()
    assert main(["convert-mar", str(src), str(run), "--heads", "4"]) == 0
    meta = json.loads((run / "config.json").read_text())
    assert (meta["config"]["mar"]["learn_sigma"] is True
            and meta["config"]["converted_from"]["epoch"] == 399)
    tensors, _ = load_tensors(run / "checkpoint.safetensors")
    torch.testing.assert_close(tensors["ema.mar.diff_pos"],
                               mar_layout(1)["diffusion_pos_embed_learned"])
    torch.testing.assert_close(tensors["model.mar.diff_pos"],
                               mar_layout(0)["diffusion_pos_embed_learned"])

    out = tmp_path / "data"
    write(tmp_path / "s.yaml",
          f"mar_run: {run}\nout: {out}/samples.npz\ntokenizer: {{kind: pixels, patch: "
          "4}\nclasses: [3, 999]\nper_class: 1\nsteps: 2\ndiffusion_steps: 3\ncfg_scale: "
          "2.0\ndevice: cpu\n")
    assert main(["sample-cmar", "--config", str(tmp_path / "s.yaml")]) == 0
    with np.load(out / "samples.npz") as z:
        assert z["images"].shape == (2, 3, 8, 8) and z["labels"].tolist() == [3, 999]

    imgs = make_image_folder(tmp_path / "imgs", per_class=(4, 2), size=(10, 10))
    model = ("model: {grid: [2, 2], token_dim: 48, n_classes: 1000, width: 32, enc_depth: 2, "
             "dec_depth: 1, heads: 4, buffer: 2, head_width: 24, head_depth: 2, time_freq: 256, "
             "learn_sigma: true, clip_x0: false, dropout: 0.1}\n")
    common = (f"data_dir: {out}\ndevice: cpu\ninit: {run}\ndata: {{source: imagefolder, root: "
              f"{imgs}, image_size: 8}}\ntokenizer: {{kind: pixels, patch: 4}}\ntrain: {{steps: 2, "
              "batch_size: 4, lr: 1.0e-4}\n")
    bad = write(tmp_path / "bad.yaml", common + model.replace("heads: 4", "heads: 2"))
    capsys.readouterr()
    assert main(["train-cmar", "--config", str(bad)]) == 2
    assert "model.heads = 2 here, 4 in" in capsys.readouterr().err
    assert main(["train-cmar", "--config", str(write(tmp_path / "m.yaml", common + model))]) == 0
    (tuned,) = [p for p in (out / "runs").glob("mar-*") if p != run]
    assert json.loads((tuned / "config.json").read_text())["config"]["init"] == meta["config_hash"]


def test_the_paper_cmar_config_fits_the_released_mar_b():
    """configs/paper/train-cmar.toml fine-tunes what convert-mar makes of MAR-B (mar_base: 12 + 12
    blocks of 768, buffer 64, 256 KL-16 tokens of 16 channels, DiffLoss 6 x 1024)."""
    from copkit.config import load
    from copkit.stages import STAGES, _check_architecture

    b = convert_state_dict(mar_layout(W=768, DEPTH_E=12, DEPTH_D=12, BUF=64, N=256, D=16, HW=1024,
                                      HD=6, device="meta"))
    released = config_from_mar(b, {"model": "mar_base"})
    root = Path(__file__).resolve().parents[1] / "configs" / "paper"
    for name in ("train-cmar", "train-mar"):
        _check_architecture(load(STAGES["train-cmar"][0], root / f"{name}.toml").model, released,
                            "MAR-B")
