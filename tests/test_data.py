import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from copkit import data
from copkit.data import (
    CLASSES,
    DataNotFoundError,
    IDXFormatError,
    find_fashion_mnist,
    load_fashion_mnist,
    photo,
    photo_crops,
    read_idx,
)


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
    with pytest.raises(IDXFormatError,
                       match=r"train-images-idx3-ubyte: file is truncated: header says "
                                             r"3 x 28 x 28 = 2352 bytes of data, found 2252"):
        read_idx(f, 3)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    f = write_idx(tmp_path / "labels.gz", np.zeros(100, np.uint8))
    f.write_bytes(f.read_bytes()[:-12])
    with pytest.raises(IDXFormatError, match="labels.gz: cannot decompress"):
        read_idx(f, 1)


def test_read_idx_rejects_wrong_magic(tmp_path):
    f = write_idx(tmp_path / "x-labels", np.zeros(5, np.uint8), magic=0x00000803)
    with pytest.raises(IDXFormatError,
                       match=r"x-labels: wrong magic number 0x00000803, expected 0x00000801"):
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
    assert (xa.shape[0] == 15
            and torch.equal(ya[12:], torch.from_numpy(arrays["test"][1][:3]).long()))
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("validation", root=tmp_path / "fm")


def test_the_arrays_are_the_files_values_read_only_and_the_check_needs_no_torch(tmp_path):
    """fashion_mnist_arrays gives the files' bytes (the values load_fashion_mnist scales), which
    no caller can change in the cache; ``copkit data`` checks the files without importing torch,
    torchvision or scikit-image (each start of it would otherwise pay for them)."""
    import os
    import sys

    arrays = fake_fashion_mnist(tmp_path / "fm")
    x, y = data.fashion_mnist_arrays("all", root=tmp_path / "fm")
    assert np.array_equal(x, np.concatenate([arrays["train"][0], arrays["test"][0]]))
    assert np.array_equal(y, np.concatenate([arrays["train"][1], arrays["test"][1]]))
    x, _ = data.fashion_mnist_arrays("train", root=tmp_path / "fm")
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0, 0] = 1
    script = ("import sys\nfrom copkit.cli import main\n"
              "assert main(['data', '--root', sys.argv[1]]) == 0\n"
              "heavy = {'torch', 'torchvision', 'skimage'} & set(sys.modules)\n"
              "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fm")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fashion-mnist train: 12 images (1, 28, 28), " in done.stdout


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


def test_the_four_files_are_named_gzipped_or_not(tmp_path):
    from copkit.data import fashion_mnist_files

    fake_fashion_mnist(tmp_path / "a")
    fake_fashion_mnist(tmp_path / "b", gz=False)
    assert [p.name for p in fashion_mnist_files(tmp_path / "a")] == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"]
    assert [p.parent for p in fashion_mnist_files(tmp_path / "b")] == [tmp_path / "b"] * 4
    (tmp_path / "b" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="holds no t10k-labels-idx1-ubyte"):
        fashion_mnist_files(tmp_path / "b")


def test_torchvision_layout_is_found(tmp_path):
    fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert find_fashion_mnist(tmp_path) == tmp_path / "FashionMNIST" / "raw"


def _nowhere(tmp_path, monkeypatch):
    """No copy anywhere: $COPKIT_DATA, the project's data/ and the system folder all empty."""
    monkeypatch.setenv("COPKIT_DATA", str(tmp_path / "nowhere"))
    monkeypatch.delenv("COPKIT_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(data, "_SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(data, "project_root", lambda: tmp_path)


def test_not_found_names_all_three_ways(tmp_path, monkeypatch):
    _nowhere(tmp_path, monkeypatch)
    with pytest.raises(DataNotFoundError) as err:
        find_fashion_mnist(download=False)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data/fashion-mnist" in msg and "COPKIT_DATA" in msg
    assert "python -m copkit data" in msg and "torchvision downloads" in msg
    assert str(tmp_path / "nowhere") in msg
    # a failing download ends in the same message, with the reason
    monkeypatch.setattr(data, "_online", lambda: True)
    monkeypatch.setattr(data, "_download",
                        lambda target: (_ for _ in ()).throw(OSError("network is unreachable")))
    with pytest.raises(DataNotFoundError, match="download failed: OSError: network is unreachable"):
        find_fashion_mnist(download=True)


class Machine:
    """A stubbed machine for find_fashion_mnist's attempts: which programs exist, who we are, what
    each command returns (and, for a successful apt-get install, the files the package puts in the
    system folder), whether the network answers and what torchvision's download does. Every
    attempt is recorded in ``calls``, in order."""

    def __init__(self, tmp_path, monkeypatch, apt=True, root=False, sudo=False, apt_fails=None,
                 package_files=True, online=True, download_works=False):
        self.calls = []
        self.system = tmp_path / "no-system-copy"
        online_ = online  # the parameter, before the stub below takes its name

        def which(program):
            self.calls.append(("which", program))
            return (f"/usr/bin/{program}" if (program == "apt-get" and apt)
                    or (program == "sudo" and sudo) else None)

        def run(cmd, quiet=False):
            self.calls.append(("run", " ".join(cmd)))
            if cmd == ["sudo", "-n", "true"]:
                return 0 if sudo == "nopasswd" else 1
            verb = cmd[cmd.index("apt-get") + 1]
            if verb == apt_fails:
                return 100
            if verb == "install" and package_files:
                fake_fashion_mnist(self.system)
            return 0

        def online():
            self.calls.append(("online",))
            return online_

        def download(target):
            self.calls.append(("download", target))
            if not download_works:
                raise OSError("HTTP Error 403: Forbidden")
            fake_fashion_mnist(target)

        monkeypatch.setattr(data, "_which", which)
        monkeypatch.setattr(data, "_euid", lambda: 0 if root else 1000)
        monkeypatch.setattr(data, "_run", run)
        monkeypatch.setattr(data, "_online", online)
        monkeypatch.setattr(data, "_download", download)

    def commands(self):
        return [c[1] for c in self.calls if c[0] == "run"]

    def steps(self):
        return [c[0] for c in self.calls if c[0] in ("online", "download")]


APT = ["apt-get update -qq", "apt-get install -y -qq dataset-fashion-mnist"]
SUDO_APT = ["sudo -n true"] + [f"sudo -n {c}" for c in APT]


def test_found_files_need_no_attempt(tmp_path, monkeypatch):
    _nowhere(tmp_path, monkeypatch)
    fake_fashion_mnist(tmp_path / "no-system-copy")
    m = Machine(tmp_path, monkeypatch, root=True)
    assert find_fashion_mnist(install=True) == tmp_path / "no-system-copy"
    assert m.calls == []


def test_root_with_apt_installs_the_package_first(tmp_path, monkeypatch, capsys):
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, root=True)
    assert find_fashion_mnist(install=True) == m.system
    assert m.commands() == APT  # update once, then install; no sudo as root
    assert m.steps() == []  # found after the install: no download
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Fashion-MNIST: installing the Debian package dataset-fashion-mnist as root "
                   "(apt-get update, apt-get install -y)"]


def test_passwordless_sudo_installs_through_sudo(tmp_path, monkeypatch):
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, sudo="nopasswd")
    assert find_fashion_mnist(install=True) == m.system
    assert m.commands() == SUDO_APT
    assert m.steps() == []


@pytest.mark.parametrize("machine, commands, why", [
    (dict(apt=False, root=True), [], "apt-get: no apt-get on this machine"),
    (dict(sudo=False), [], "apt-get: not root, and sudo asks for a password"),
    (dict(sudo="password"), ["sudo -n true"], "apt-get: not root, and sudo asks for a password"),
    (dict(root=True, apt_fails="update"), APT[:1],
     "apt-get: `apt-get update` failed with exit status 100"),
    (dict(root=True, apt_fails="install"), APT,
     "apt-get: `apt-get install -y dataset-fashion-mnist` failed with exit status 100"),
    (dict(sudo="nopasswd", apt_fails="install"), SUDO_APT,
     "apt-get install -y dataset-fashion-mnist` failed"),
    (dict(root=True, package_files=False), APT, "apt-get: the package installed nothing into"),
])
def test_without_apt_the_download_comes_next(tmp_path, monkeypatch, machine, commands, why):
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, download_works=True, **machine)
    assert find_fashion_mnist(install=True) == tmp_path / "data" / "fashion-mnist"
    assert m.commands() == commands
    assert m.steps() == ["online", "download"]
    # and when the download fails too, the three-way message says why each attempt failed
    m2 = Machine(tmp_path / "again", monkeypatch, download_works=False, **machine)
    monkeypatch.setattr(data, "project_root", lambda: tmp_path / "again")
    with pytest.raises(DataNotFoundError) as err:
        find_fashion_mnist(install=True)
    assert m2.commands() == commands and m2.steps() == ["online", "download"]
    msg = str(err.value)
    assert why in msg and "download failed: OSError: HTTP Error 403: Forbidden" in msg
    assert "1. Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist" in msg
    assert "2. copy train-images-idx3-ubyte.gz" in msg and "COPKIT_DATA" in msg
    assert "3. on a machine that is online, run `python -m copkit data`" in msg


def test_offline_skips_the_download(tmp_path, monkeypatch, capsys):
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, apt=False, online=False)
    with pytest.raises(DataNotFoundError) as err:
        find_fashion_mnist(install=True)
    assert m.steps() == ["online"]  # no download attempted
    assert "no apt-get on this machine" in str(err.value) and "download: offline" in str(err.value)
    assert capsys.readouterr().err == ""  # nothing was tried, so nothing said


def test_library_calls_never_install(tmp_path, monkeypatch):
    """Only `python -m copkit data` (install=True) runs apt-get; a chapter's load does not."""
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, root=True, download_works=True)
    assert find_fashion_mnist() == tmp_path / "data" / "fashion-mnist"
    assert m.commands() == [] and m.steps() == ["online", "download"]


def test_download_switched_off(tmp_path, monkeypatch):
    _nowhere(tmp_path, monkeypatch)
    m = Machine(tmp_path, monkeypatch, root=True, apt_fails="update")
    monkeypatch.setenv("COPKIT_NO_DOWNLOAD", "1")
    with pytest.raises(DataNotFoundError, match="apt-get update` failed .*; download switched off"):
        find_fashion_mnist(install=True)
    assert m.commands() == APT[:1] and m.steps() == []


def test_data_command_installs_then_checks(tmp_path, monkeypatch, capsys):
    from copkit.cli import main

    _nowhere(tmp_path, monkeypatch)
    data._load_split.cache_clear()
    m = Machine(tmp_path, monkeypatch, root=True)
    assert main(["data"]) == 0
    assert m.commands() == APT
    out = capsys.readouterr()
    assert ("fashion-mnist train: 12 images (1, 28, 28)" in out.out and "found in "
                                                                        f"{m.system}" in out.out)
    m2 = Machine(tmp_path / "b", monkeypatch, root=True)
    monkeypatch.setattr(data, "_SYSTEM_DIR", tmp_path / "b" / "none")
    monkeypatch.setattr(data, "project_root", lambda: tmp_path / "b")
    assert main(["data", "--no-install", "--no-download"]) == 2
    assert m2.calls == []
    assert "Get it in one of three ways" in capsys.readouterr().err


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


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("goal, users", [("test", ("-m pytest", "run_chapters.py")),
                                         ("book", ("run_chapters.py",)),
                                         ("unit", ("-m pytest",))])
def test_make_gets_the_data_before_anything_reads_it(goal, users):
    """`make test` and `make book` run `python -m copkit data` (which installs or downloads the
    data) before the unit tests and the chapters that read it."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(["make", "-n", "-B", goal], cwd=root, capture_output=True, text=True,
                         check=True)
    lines = res.stdout.splitlines()
    data_step = [i for i, line in enumerate(lines) if line.endswith("-m copkit data")]
    assert data_step, res.stdout
    for user in users:
        first = next(i for i, line in enumerate(lines) if user in line)
        assert data_step[0] < first, (
            f"`make {goal}` runs {user!r} before `copkit data`:\n{res.stdout}")
