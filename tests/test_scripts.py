"""The scripts that run the book on a GPU machine: scripts/gpu_book.sh's plumbing (one chapter at
smoke on the CPU, packed as it goes), scripts/device_book.sh's refusal without a kit, and
tools/device_kit.py's choice of wheels (on planted distributions with known requirements)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import device_kit  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402


def _dist(site: Path, name: str, version: str, requires: list[str]) -> None:
    """A planted installed distribution: ``site/<name>-<version>.dist-info/METADATA``."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_device_kit_walks_requirements_for_the_devices_python_and_carries_what_the_image_lacks(
        tmp_path, monkeypatch):
    _dist(tmp_path, "kitroot", "1.0",
          ['kitdep>=1', 'kitold; python_version < "3.12"', 'kitnew; python_version >= "3.12"',
                                       'kitwin; sys_platform == "win32"',
           'kitextra; extra == "docs"'])
    _dist(tmp_path, "kitdep", "2.5", ["kitleaf", "kitimage"])
    _dist(tmp_path, "kitleaf", "0.3", [])
    _dist(tmp_path, "kitimage", "9.9", [])
    _dist(tmp_path, "kitold", "1.0", [])
    _dist(tmp_path, "kitextra", "1.0", [])
    monkeypatch.syspath_prepend(str(tmp_path))

    found = device_kit.closure([Requirement("kitroot")])
    # Python 3.12 on Linux: kitold (< 3.12), kitwin and the extra's kitextra are not needed;
    # kitnew is needed but not installed here, so it has no version to pin.
    assert (found == {"kitroot": "1.0", "kitdep": "2.5", "kitleaf": "0.3", "kitimage": "9.9",
                      "kitnew": None})
    older = device_kit.closure([Requirement("kitroot")],
                               {**device_kit.TARGET_ENV, "python_version": "3.11"})
    assert "kitold" in older and "kitnew" not in older
    assert "kitextra" in device_kit.closure([Requirement("kitroot[docs]")])

    image = {"kitimage", "kitleaf", "timm"}
    carry = device_kit.to_carry({**found, "timm": "1.0.31"}, image)
    # timm: always carried
    assert carry == {"kitdep": "2.5", "kitnew": None, "kitroot": "1.0", "timm": "1.0.31"}


def test_the_image_list_reads_names_canonically(tmp_path):
    f = tmp_path / "image.txt"
    f.write_text("# comment\nPyYAML\n\ntyping_extensions  # trailing comment\nNvidia-NCCL-cu13\n")
    assert device_kit.image_packages(f) == {"pyyaml", "typing-extensions", "nvidia-nccl-cu13"}
    have = device_kit.image_packages()
    assert ({"torch", "numpy", "matplotlib"} <= have and "papermill" not in have
            and "kneed" not in have)


def test_the_book_needs_papermill_and_the_kernel_and_never_jupyter_book():
    needed = device_kit.closure(device_kit.book_roots())
    assert ({"papermill", "jupytext", "ipykernel", "nbclient", "kneed", "timm",
             "torch"} <= set(needed))
    assert "jupyter-book" not in needed and "sphinx" not in needed


def _env(**extra: str) -> dict:
    return {**os.environ, "PY": sys.executable, "BOOK_PROFILE": "smoke", "BOOK_DEVICE": "cpu",
            **extra}


@pytest.mark.fashion_mnist
def test_gpu_book_runs_the_chapters_asked_and_packs_only_what_it_made(tmp_path):
    out = tmp_path / "book"
    pack = tmp_path / "made.tar.gz"
    res = subprocess.run(["bash", "scripts/gpu_book.sh"], cwd=ROOT, capture_output=True, text=True,
                         env=_env(OUT=str(out), PACK=str(pack), LOG=str(tmp_path / "run.log"),
                                  SKIP_BENCH="1", BOOK_CHAPTERS="07_performance"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "07_performance.ipynb").is_file() and not (out / "06_report.ipynb").exists()
    with tarfile.open(pack) as tar:
        names = sorted(Path(n).name for n in tar.getnames())
    assert names == ["07_performance.ipynb", "runtimes-smoke.json"]
    assert "07_performance" in (tmp_path / "run.log").read_text()


def test_gpu_book_refuses_an_unknown_chapter_before_running_any():
    res = subprocess.run(["bash", "scripts/gpu_book.sh"], cwd=ROOT, capture_output=True, text=True,
                         env=_env(BOOK_CHAPTERS="99_nothing", SKIP_BENCH="1", OUT=".scratch/never"))
    assert res.returncode == 2 and "no chapter chapters/99_nothing.py" in res.stderr
    assert not (ROOT / ".scratch" / "never").exists()


def test_device_book_without_a_kit_says_how_to_make_one(tmp_path):
    res = subprocess.run(["bash", "scripts/device_book.sh"], cwd=ROOT, capture_output=True,
                         text=True,
                         env={**os.environ, "KIT": str(tmp_path / "none"),
                              "OUT": str(tmp_path / "out")})
    assert res.returncode == 2 and "make device-kit" in res.stderr


def test_sync_check_keeps_only_sync_warnings_inside_an_inner_step():
    from sync_check import SyncLog

    log = SyncLog()
    # a logging step: no label
    log.show("called a synchronizing CUDA operation", UserWarning, "x.py", 1)
    log.label = "mar step 3"
    log.show("some other warning", UserWarning, "x.py", 1)
    log.show("called a synchronizing CUDA operation", UserWarning, "x.py", 1)
    assert [f["where"] for f in log.found] == ["mar step 3"]


@pytest.mark.fashion_mnist
def test_sync_check_drives_every_model_and_the_sampler(capsys, monkeypatch):
    """On the CPU nothing syncs (there is no GPU to wait for); this runs the check's own code, which
    on a GPU runs under CUDA's sync debug mode, so that the device's one try cannot fail on it."""
    import torch
    from sync_check import SyncLog, check_sampling, check_training, main

    from copkit.data import load_fashion_mnist

    log = SyncLog()
    x, y = load_fashion_mnist("train", limit=512)
    for name in ("comae", "mar", "cvit"):
        assert check_training(name, "smoke", torch.device("cpu"), log, x, y) == 0
    assert check_sampling("smoke", torch.device("cpu"), log) == 0
    if not torch.cuda.is_available():
        monkeypatch.setattr(sys, "argv", ["sync_check.py"])
        assert main() == 2 and "needs one" in capsys.readouterr().err


class _MaskStub:
    """A stand-in selector whose logits are given: ``shared`` (N, N) for every image, plus
    ``own`` (B, N, N) per image; masks are their squashing."""

    def __init__(self, shared, own):
        self.shared, self.own = shared, own

    def masks(self, tokens, chunk=None, logits=False):
        import torch

        x = self.shared + self.own[: tokens.shape[0]]
        x = x.masked_fill(torch.eye(x.shape[-1], dtype=torch.bool), 0.0)
        return x if logits else (torch.tanh(x) + 1) / 2


def test_order_report_tells_one_fixed_order_from_image_specific_orders():
    """Planted selectors: logits that ignore the image give one order for every image (one first
    patch, the fixed order's overlap 1, footrule 0, no image share); logits drawn per image give
    many orders (overlap near the 22% a random set shares, footrule near that of random orders)."""
    import order_report
    import torch

    torch.manual_seed(0)
    b, n = 300, 49
    images = torch.rand(b, 1, 28, 28) * 2 - 1
    labels = torch.arange(b) % 10
    shared = torch.randn(n, n)
    fixed = order_report.report(_MaskStub(shared, torch.zeros(b, n, n)), images, labels)
    assert fixed["distinct_first"] == 1 and fixed["distinct_top"] == 1
    assert fixed["fixed_overlap"] == 1.0 and fixed["footrule"] == 0.0
    assert fixed["image_specific"] < 1e-9
    own = order_report.report(_MaskStub(shared, 100 * torch.randn(b, n, n)), images, labels)
    assert own["distinct_first"] > 20 and own["distinct_top"] == b
    assert own["fixed_overlap"] < 0.4 and own["footrule"] > 0.8
    assert own["image_specific"] > 0.99
    # every patch of these noise images holds a bright pixel: any top is all object
    assert own["object_share_top22"] == own["object_share_random"] == 1.0
