"""torchrun: two CPU processes (gloo) end with the weights one process gets with the same global
batch, and write the same collapse orders. The one process is a plain in-process call of the
command (``copkit.cli.main``), as a user without torchrun runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import TINY_COMAE, make_image_folder, write

from copkit.checkpoint import load_tensors
from copkit.cli import main

DATA = "data: {{source: imagefolder, root: {imgs}, image_size: 32}}\n"


def torchrun(nproc: int, *args: str, cwd: Path) -> None:
    """``python -m copkit *args`` in ``nproc`` processes under torchrun, or, for one process, called
    in this process (no launcher: the command as a user runs it, and one interpreter start less)."""
    if nproc == 1:
        with contextlib.chdir(cwd):
            assert main(list(args)) == 0, f"copkit {' '.join(args)} failed (see stderr above)"
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "copkit", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def weights(run_root: Path, model: str) -> dict[str, torch.Tensor]:
    (run,) = (run_root / "runs").glob(f"{model}-*")
    tensors, _ = load_tensors(run / "checkpoint.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.qkv.bias"):
            # The key bias does not change softmax(q k^T): its gradient is 0 up to round-off, and
            # Adam scales round-off up to steps of size lr, so only the q and v parts compare.
            w = x.shape[0] // 3
            x, y = torch.cat([x[:w], x[2 * w:]]), torch.cat([y[:w], y[2 * w:]])
        torch.testing.assert_close(x, y, rtol=1e-4, atol=2e-5, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every training stage once in one process and once with 2 under torchrun; the first CoMAE
    ranked both ways."""
    root = tmp_path_factory.mktemp("dist")
    imgs = make_image_folder(root / "imgs")
    for nproc in (1, 2):
        out = root / f"p{nproc}"
        c = write(root / f"comae{nproc}.toml", TINY_COMAE.format(out=out, imgs=imgs, steps=4))
        torchrun(nproc, "train-comae", "--config", str(c), cwd=root)
        (comae_run,) = (root / "p1" / "runs").glob("comae-*")  # the same CoMAE for both rankings
        r = write(root / f"rank{nproc}.yaml",
                  f"comae_run: {comae_run}\nout: {out}/orders.npz\ndevice: cpu\nshard_size: "
                  f"5\n{DATA.format(imgs=imgs)}tokenizer: {{kind: pixels, patch: 8}}\n")
        torchrun(nproc, "rank", "--config", str(r), cwd=root)
        m = write(root / f"mar{nproc}.yaml",
                  f"data_dir: {out}\ndevice: cpu\nkind: descending\nrandom_fraction: 0.5\norders: "
                  f"{root}/p1/orders.npz\n{DATA.format(imgs=imgs)}tokenizer: {{kind: pixels, "
                  "patch: 8}\nmodel: {grid: [4, 4], token_dim: 192, n_classes: 2, width: 16, "
                  "enc_depth: 1, dec_depth: 1, heads: 2, head_width: 16, head_depth: 1}\ntrain: "
                  "{steps: 3, batch_size: 4, lr: 0.01, ema_decay: 0.5}\n")
        torchrun(nproc, "train-cmar", "--config", str(m), cwd=root)
        (mar_run,) = (root / "p1" / "runs").glob("mar-*")
        smp = write(root / f"sample{nproc}.yaml",
                    f"mar_run: {mar_run}\nout: {out}/samples.npz\ndevice: cpu\ntokenizer: {{kind: "
                    "pixels, patch: 8}\nper_class: 2\nsteps: 3\ndiffusion_steps: 3\n")
        torchrun(nproc, "sample-cmar", "--config", str(smp), cwd=root)
        v = write(root / f"vit{nproc}.yaml",
                  f"data_dir: {out}\ndevice: cpu\n{DATA.format(imgs=imgs)}model: {{width: 16, "
                  "depth: 2, heads: 2, img_size: 32, patch: 8, classes: 2, in_chans: 3, "
                  "train_drop: random}\ntrain: {steps: 3, batch_size: 4, lr: 0.01, ema_decay: "
                  "0.5}\n")
        torchrun(nproc, "train-cvit", "--config", str(v), cwd=root)
    return root


@pytest.mark.parametrize("model", ["comae", "mar", "cvit"])
def test_two_processes_train_like_one(runs, model):
    assert_same(weights(runs / "p1", model), weights(runs / "p2", model))


def test_two_processes_sample_every_label_once(runs):
    for p in ("p1", "p2"):
        with np.load(runs / p / "samples.npz") as z:
            assert z["images"].shape == (4, 3, 32, 32) and z["labels"].tolist() == [0, 0, 1, 1]


def test_two_processes_rank_like_one(runs):
    with np.load(runs / "p1" / "orders.npz") as a, np.load(runs / "p2" / "orders.npz") as b:
        assert (np.array_equal(a["orders"], b["orders"])
                and str(a["comae_hash"]) == str(b["comae_hash"]))
    assert not list((runs / "p2").glob("orders.npz.parts/*.tmp*"))
