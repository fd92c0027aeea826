import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from copkit import data
from copkit.data import (CLASSES, DataNotFoundError, IDXFormatError, find_fashion_mnist, gaussian_field,
                         field_covariance, load_fashion_mnist, photo, photo_crops, read_idx)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0) -> Path:
    """An IDX file written by hand from the format's definition (big-endian header)."""
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    raw = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw += array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut]
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def fake_fashion_mnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, n, dtype=np.uint8)
        sfx = ".gz" if gz else ""
        write_idx(folder / f"{stem}-images-idx3-ubyte{sfx}", imgs)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{sfx}", labs)
        arrays[split] = (imgs, labs)
    return arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_reads_what_was_written(tmp_path, suffix):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path / f"x{suffix}", a), 3)
    assert np.array_equal(got, a)


def test_read_idx_rejects_truncated_file(tmp_path):
    f = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), cut=100)
    with pytest.raises(IDXFormatError, match=r"train-images-idx3-ubyte: file is truncated: header says "
                                             r"3 x 28 x 28 = 2352 bytes of data, found 2252"):
        read_idx(f, 3)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    f = write_idx(tmp_path / "labels.gz", np.zeros(100, np.uint8))
    f.write_bytes(f.read_bytes()[:-12])
    with pytest.raises(IDXFormatError, match="labels.gz: cannot decompress"):
        read_idx(f, 1)


def test_read_idx_rejects_wrong_magic(tmp_path):
    f = write_idx(tmp_path / "x-labels", np.zeros(5, np.uint8), magic=0x00000803)
    with pytest.raises(IDXFormatError, match=r"x-labels: wrong magic number 0x00000803, expected 0x00000801"):
        read_idx(f, 1)
    g = tmp_path / "foreign"
    g.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(IDXFormatError, match="foreign: wrong magic number 0x89504e47"):
        read_idx(g, 3)


def test_load_from_a_root_scales_to_minus_one_one(tmp_path):
    arrays = fake_fashion_mnist(tmp_path / "fm")
    x, y = load_fashion_mnist("train", root=tmp_path / "fm")
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.from_numpy(arrays["train"][0]).float() / 127.5 - 1)
    assert torch.equal(y, torch.from_numpy(arrays["train"][1]).long())
    xa, ya = load_fashion_mnist("all", root=tmp_path / "fm", limit=15)
    assert xa.shape[0] == 15 and torch.equal(ya[12:], torch.from_numpy(arrays["test"][1][:3]).long())
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("validation", root=tmp_path / "fm")


def test_mismatched_counts_are_refused(tmp_path):
    fake_fashion_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    data._load_split.cache_clear()
    with pytest.raises(IDXFormatError, match="holds 5 images but .* holds 4 labels"):
        load_fashion_mnist("test", root=tmp_path)


def test_search_order_env_var_first(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("COPKIT_DATA", str(tmp_path / "env"))
    assert find_fashion_mnist() == tmp_path / "env" / "fashion-mnist"


def test_torchvision_layout_is_found(tmp_path):
    fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert find_fashion_mnist(tmp_path) == tmp_path / "FashionMNIST" / "raw"


def test_not_found_names_all_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("COPKIT_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(data, "_SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(data, "project_root", lambda: tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        find_fashion_mnist(download=False)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data/fashion-mnist" in msg and "COPKIT_DATA" in msg
    assert "python -m copkit data" in msg and "torchvision downloads" in msg
    assert str(tmp_path / "nowhere") in msg
    # a failing download ends in the same message, with the reason
    monkeypatch.setattr(data, "_download", lambda target: (_ for _ in ()).throw(OSError("network is unreachable")))
    with pytest.raises(DataNotFoundError, match="download failed: OSError: network is unreachable"):
        find_fashion_mnist(download=True)


@pytest.mark.fashion_mnist
def test_real_fashion_mnist():
    try:
        find_fashion_mnist(download=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (.ci/run installs it)")
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28)
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))
    assert len(CLASSES) == 10
    assert load_fashion_mnist("train")[0].shape[0] == 60000


def test_photos_and_crops():
    img = photo("camera", 32)
    assert img.shape == (1, 32, 32) and -1 <= img.min() and img.max() <= 1
    rgb = photo("astronaut", 16, gray=False)
    assert rgb.shape == (3, 16, 16)
    crops = photo_crops("coffee", 7, 28, seed=1)
    assert crops.shape == (7, 1, 28, 28)
    assert torch.equal(crops, photo_crops("coffee", 7, 28, seed=1))
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        photo("lena", 8)


def test_gaussian_field_has_its_covariance():
    cov = field_covariance(4, length_scale=1.5, kernel="squared_exponential")
    x = gaussian_field(40000, 4, cov=cov, seed=2).reshape(40000, 16).double()
    assert torch.allclose(torch.cov(x.T), cov, atol=0.04)
    with pytest.raises(ValueError, match="cov must be"):
        gaussian_field(2, 5, cov=cov)
