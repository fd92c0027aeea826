"""torchrun: two CPU processes (gloo) end with the weights one process gets with the same global
batch, and write the same collapse orders. The one process is a plain in-process call of the
command (``copkit.cli.main``), as a user without torchrun runs it."""

from __future__ import annotations

import contextlib
import json
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


def in_process(*args: str, cwd: Path) -> None:
    """``python -m copkit *args`` called in this process, as a user without torchrun runs it (no
    launcher, and one interpreter start less)."""
    with contextlib.chdir(cwd):
        assert main(list(args)) == 0, f"copkit {' '.join(args)} failed (see stderr above)"


def torchrun(commands: list[list[str]], cwd: Path) -> None:
    """Each of ``commands`` (the arguments of ``python -m copkit``) in turn in 2 processes under one
    torchrun launch, so the interpreter and torch start once and not once a command. The workers
    call :func:`copkit.cli.main` once per command; the process group the first command joins stays
    joined (a group that is left cannot be joined again under the same launcher) and the later
    commands find it, as ``copkit.dist.setup`` allows."""
    driver = cwd / "commands.py"
    driver.write_text(
        "import json, sys\nimport torch.distributed as td\nfrom copkit.cli import main\n"
        "leave, td.destroy_process_group = td.destroy_process_group, lambda *a, **k: None\n"
        "for args in json.loads(sys.argv[1]):\n    assert main(args) == 0, args\n"
        "    assert td.is_initialized() and td.get_world_size() == 2, ('not 2 processes', args)\n"
        "leave()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(driver), json.dumps(commands)]
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
    ranked both ways and the first MAR sampled both ways."""
    root = tmp_path_factory.mktemp("dist")
    imgs = make_image_folder(root / "imgs")
    for nproc in (1, 2):
        out = root / f"p{nproc}"
        commands: list[list[str]] = []

        def run(*args: str, one: bool = nproc == 1, commands: list = commands) -> None:
            if one:  # one process: now; two: every command in one launch below
                in_process(*args, cwd=root)
            commands.append(list(args))

        c = write(root / f"comae{nproc}.toml", TINY_COMAE.format(out=out, imgs=imgs, steps=4))
        run("train-comae", "--config", str(c))
        (comae_run,) = (root / "p1" / "runs").glob("comae-*")  # the same CoMAE for both rankings
        r = write(root / f"rank{nproc}.yaml",
                  f"comae_run: {comae_run}\nout: {out}/orders.npz\ndevice: cpu\nshard_size: "
                  f"5\n{DATA.format(imgs=imgs)}tokenizer: {{kind: pixels, patch: 8}}\n")
        run("rank", "--config", str(r))
        m = write(root / f"mar{nproc}.yaml",
                  f"data_dir: {out}\ndevice: cpu\nkind: descending\nrandom_fraction: 0.5\norders: "
                  f"{root}/p1/orders.npz\n{DATA.format(imgs=imgs)}tokenizer: {{kind: pixels, "
                  "patch: 8}\nmodel: {grid: [4, 4], token_dim: 192, n_classes: 2, width: 16, "
                  "enc_depth: 1, dec_depth: 1, heads: 2, head_width: 16, head_depth: 1}\ntrain: "
                  "{steps: 3, batch_size: 4, lr: 0.01, ema_decay: 0.5}\n")
        run("train-cmar", "--config", str(m))
        (mar_run,) = (root / "p1" / "runs").glob("mar-*")
        smp = write(root / f"sample{nproc}.yaml",
                    f"mar_run: {mar_run}\nout: {out}/samples.npz\ndevice: cpu\ntokenizer: {{kind: "
                    "pixels, patch: 8}\nper_class: 2\nsteps: 3\ndiffusion_steps: 3\n")
        run("sample-cmar", "--config", str(smp))
        v = write(root / f"vit{nproc}.yaml",
                  f"data_dir: {out}\ndevice: cpu\n{DATA.format(imgs=imgs)}model: {{width: 16, "
                  "depth: 2, heads: 2, img_size: 32, patch: 8, classes: 2, in_chans: 3, "
                  "train_drop: random}\ntrain: {steps: 3, batch_size: 4, lr: 0.01, ema_decay: "
                  "0.5}\n")
        run("train-cvit", "--config", str(v))
        if nproc == 2:
            torchrun(commands, cwd=root)
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
