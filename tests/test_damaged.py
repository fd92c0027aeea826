"""A damaged or foreign checkpoint, orders file or run config gets one error,
copkit.io.DamagedFileError, naming the file and what to do, never a raw SafetensorError, zip or JSON
traceback. Each reader is fed truncated files, garbage bytes and well-formed files of another
kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from copkit.checkpoint import load_tensors, load_weights, save_tensors
from copkit.config import ConfigError
from copkit.io import DamagedFileError, remedy_for
from copkit.orders import _npz_bytes, compute_orders, load_orders, merge_shards
from copkit.recipe import TrainConfig
from copkit.train import train

GARBAGE = bytes(range(256)) * 3


def cut(path: Path, keep: float = 0.5) -> Path:
    """Truncate ``path`` to a fraction of its bytes, as a killed copy or a full disk leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


#: how much of a file each kind of truncation keeps
KEEP = {"half": 0.5, "header": 0.02, "tail": 0.98}


def damage_file(path: Path, damage: str) -> Path:
    """Damage ``path`` one way: truncated (:data:`KEEP`), overwritten with garbage, or emptied."""
    if damage in KEEP:
        return cut(path, KEEP[damage])
    path.write_bytes({"garbage": GARBAGE, "empty": b""}[damage])
    return path


def raises_damaged(path: Path, call, *remedy_words: str) -> DamagedFileError:
    with pytest.raises(DamagedFileError) as info:
        call()
    err = info.value
    assert err.path == path and str(path) in str(err)
    for word in remedy_words:
        assert word in err.remedy and word in str(err), (word, str(err))
    return err


# ------------------------------------------------------------------------------ safetensors
@pytest.fixture
def checkpoint(tmp_path) -> Path:
    run = tmp_path / "runs" / "comae-0123abcd"
    return save_tensors(run / "checkpoint.safetensors", {"model.w": torch.arange(1000.0)},
                        {"step": 3})


def test_intact_file_still_reads(checkpoint):
    tensors, meta = load_tensors(checkpoint)
    assert meta == {"step": 3} and torch.equal(tensors["model.w"], torch.arange(1000.0))


@pytest.mark.parametrize("damage", ["half", "header", "garbage", "empty"])
def test_damaged_checkpoint_names_the_run_folder(checkpoint, damage):
    damage_file(checkpoint, damage)
    err = raises_damaged(checkpoint, lambda: load_tensors(checkpoint),
                         f"Delete the run folder {checkpoint.parent}", "training starts over")
    assert "truncated or corrupt" in err.problem


def test_foreign_safetensors_is_refused(tmp_path):
    """A well-formed safetensors file that copkit did not write: no metadata, or metadata that is
    not copkit's JSON object."""
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    err = raises_damaged(path, lambda: load_tensors(path), f"Delete {path}", "re-run")
    assert "without copkit's metadata" in err.problem
    save_file({"w": torch.zeros(3)}, str(path), metadata={"json": "[1, 2]"})
    raises_damaged(path, lambda: load_tensors(path))
    save_file({"w": torch.zeros(3)}, str(path), metadata={"json": "{not json"})
    raises_damaged(path, lambda: load_tensors(path))


def test_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "nothing.safetensors")


# ------------------------------------------------------------------------------ orders
def _orders_file(path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(16) for _ in range(n)]).astype(np.uint8)
    path.write_bytes(_npz_bytes(orders=orders, split=np.array(["train"] * n),
                                comae_hash=np.array("h" * 64)))
    return path


def test_intact_orders_still_read(tmp_path):
    orders, split, made_by = load_orders(_orders_file(tmp_path / "orders-hhhhhhhh.npz"), "h" * 64)
    assert orders.shape == (6, 16) and split.tolist() == ["train"] * 6 and made_by == "h" * 64


@pytest.mark.parametrize("damage", ["half", "tail", "garbage", "empty"])
def test_damaged_orders_file(tmp_path, damage):
    path = _orders_file(tmp_path / "orders-hhhhhhhh.npz", n=200)
    damage_file(path, damage)
    raises_damaged(path, lambda: load_orders(path), f"Delete {path}", "make orders")


def test_foreign_npz_is_not_an_orders_file(tmp_path):
    path = tmp_path / "mine.npz"
    path.write_bytes(_npz_bytes(images=np.zeros((2, 3), np.uint8)))
    err = raises_damaged(path, lambda: load_orders(path), f"Delete {path}", "python -m copkit rank")
    assert "lacks orders, split, comae_hash (holds images)" in err.problem
    path.write_bytes(_npz_bytes(orders=np.zeros((4, 16), np.float32), split=np.array(["train"] * 4),
                                comae_hash=np.array("h")))
    assert "not the uint8 (n, N) orders" in raises_damaged(path, lambda: load_orders(path)).problem
    np.save(tmp_path / "single.npy", np.zeros(3))
    single = tmp_path / "single.npy"
    assert "single array" in raises_damaged(single, lambda: load_orders(single)).problem
    with open(path, "wb") as fh:  # an object array: only a pickle could read it
        np.savez(fh, orders=np.array([{"a": 1}], dtype=object), split=np.array(["x"]),
                 comae_hash=np.array("h"))
    raises_damaged(path, lambda: load_orders(path))


def test_damaged_shard_is_named(tmp_path):
    tokens = torch.randn(6, 4, 3)

    class Uniform:
        def masks(self, x, chunk=64):
            return torch.ones(len(x), x.shape[1], x.shape[1])

    out = tmp_path / "orders.npz"
    compute_orders(Uniform(), tokens, out, "h" * 64, ["train"] * 6, shard_size=3, progress=False)
    shard = tmp_path / "orders.npz.parts" / "shard-00001.npz"
    cut(shard)
    raises_damaged(shard,
                   lambda: compute_orders(Uniform(), tokens, out, "h" * 64, ["train"] * 6,
                                          shard_size=3,
                                                 progress=False), f"Delete {shard}")
    raises_damaged(shard,
                   lambda: merge_shards(shard.parent, out, "h" * 64, 6, np.array(["train"] * 6)))


# ------------------------------------------------------------------------------ run folders
@pytest.mark.parametrize("content", [b"{\"config_hash\": \"ab", GARBAGE, b"[1, 2, 3]",
                                     b"{\"config\": {}}"])
def test_run_config_garbage(tmp_path, content):
    from copkit.stages import _read_run

    run = tmp_path / "runs" / "comae-0123abcd"
    save_tensors(run / "checkpoint.safetensors", {"w": torch.zeros(1)}, {})
    (run / "config.json").write_bytes(content)
    raises_damaged(run / "config.json", lambda: _read_run(run), f"Delete the run folder {run}")
    (run
     / "config.json").write_text(json.dumps({"config_hash": "ab" * 32, "config": {"model": {}}}))
    assert _read_run(run)["config_hash"] == "ab" * 32
    (run / "config.json").unlink()
    with pytest.raises(ConfigError, match="not a finished run folder"):
        _read_run(run)


def test_remedies_by_kind():
    assert "Delete the run folder /d/runs/x" in remedy_for("/d/runs/x/checkpoint.safetensors")
    assert "make orders" in remedy_for("/d/orders-12345678.npz")
    assert ("Delete /d/comae-12345678.safetensors (and comae-12345678.json"
            in remedy_for("/d/comae-12345678.safetensors"))
    err = DamagedFileError("/d/x.bin", "is odd")
    assert str(err) == "/d/x.bin: is odd. Delete /d/x.bin and re-run the command that made it."
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------ the command line
def test_train_comae_with_a_truncated_checkpoint_says_what_to_do(tmp_path, capsys):
    """The issue's case: `python -m copkit train-comae` over a run folder whose checkpoint a kill or
    a full disk cut short used to stop with a raw SafetensorError."""
    from test_cli import TINY_COMAE, make_image_folder

    from copkit.cli import main

    imgs = make_image_folder(tmp_path / "imgs", per_class=(4, 2), size=(32, 32))
    config = tmp_path / "c.toml"
    config.write_text(TINY_COMAE.format(out=tmp_path / "out", imgs=imgs, steps=2))
    assert main(["train-comae", "--config", str(config)]) == 0
    (run,) = (tmp_path / "out" / "runs").glob("comae-*")
    capsys.readouterr()
    cut(run / "checkpoint.safetensors")
    assert main(["train-comae", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'checkpoint.safetensors'}: cannot be read, it is "
                          "truncated or corrupt")
    assert f"Delete the run folder {run} and run the command that trained it again" in err
    assert "Traceback" not in err
    # a stage that reads the run: rank, with the run's config.json overwritten by garbage
    (run / "config.json").write_bytes(GARBAGE)
    rank = tmp_path / "r.yaml"
    rank.write_text(f"comae_run: {run}\nout: {tmp_path}/orders.npz\ndevice: cpu\n"
                    f"data: {{source: imagefolder, root: {imgs}, image_size: 32}}\ntokenizer: "
                    "{kind: pixels, patch: 8}\n")
    assert main(["rank", "--config", str(rank)]) == 2
    err = capsys.readouterr().err
    assert (f"error: {run / 'config.json'}: is not readable JSON" in err
            and f"Delete the run folder {run}" in err)


def test_a_foreign_checkpoint_in_a_run_folder_is_named_before_any_weight_is_loaded(tmp_path):
    """A valid checkpoint of another model in the run folder: the error names the file and the fix,
    whether its configuration differs or only its networks do (never a raw load_state_dict
    error)."""
    def run(width: int, config: dict, steps: int = 2):
        torch.manual_seed(0)
        net = torch.nn.Linear(width, width)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        x = torch.randn(8, width)
        step = lambda t, g: (net(x).pow(2).mean(), "net", {})  # noqa: E731
        return train({"net": net}, {"net": opt}, step, TrainConfig(steps=steps, batch_size=8),
                     tmp_path, config, progress=False)

    run(2, {"model": "a"})
    with pytest.raises(DamagedFileError, match="another configuration") as err:
        run(3, {"model": "b"}, steps=4)
    assert (err.value.path == tmp_path / "checkpoint.safetensors"
            and "Delete the run folder" in str(err.value))
    with pytest.raises(DamagedFileError, match="do not fit"):
        run(3, {"model": "a"}, steps=4)  # the same configuration hash, other networks
    with pytest.raises(DamagedFileError, match="do not fit"):
        load_weights(tmp_path, "net", torch.nn.Linear(3, 3))


def test_file_sha256_is_the_digest_of_the_whole_file_across_chunks(tmp_path):
    """The one digest of a file (shipped models' descriptions, the weights and VAE files a run's
    hash names): a file longer than the 1 MiB read chunk hashes as its whole bytes do."""
    import hashlib

    from copkit.io import file_sha256

    data = bytes(range(256)) * 5000  # 1.22 MiB: two chunks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "g").write_bytes(data[:-1] + b"\x00")
    assert file_sha256(tmp_path / "g") != file_sha256(tmp_path / "f")
