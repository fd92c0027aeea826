"""Host-device syncs in the book's inner loops, on a CUDA GPU (scripts/gpu_book.sh runs this first).

Each of the profile's CoMAE, MAR and CViT trains for a few steps through ``copkit.train.train``, and
MAR samples a small batch, with CUDA's sync debug mode on: every time the host waits for the GPU
(reading a value, a copy from pageable memory, a shape that depends on data) PyTorch warns, and the
warning is kept with the step and the lines of copkit that caused it. ``train`` reads the loss on
logging and checkpoint steps on purpose, so only the steps between them count. Writes
``<out>`` (JSON: syncs per model and where) and exits 1 if an inner loop synced.

    python tools/sync_check.py --profile gpu --out book/results/sync-check-gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

# the profile's models, optimisers and step functions, as fit makes them
from bench import _training  # noqa: E402

from copkit.data import load_fashion_mnist  # noqa: E402
from copkit.io import atomic_write_json  # noqa: E402
from copkit.train import train  # noqa: E402


class SyncLog:
    """Collects CUDA's sync warnings while ``active``, each with its label and copkit's frames."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.found: list[dict] = []

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self.label is None or "synchroniz" not in str(message):
            return
        frames = [f"{Path(f.filename).name}:{f.lineno} "
                  f"{f.name}" for f in traceback.extract_stack()[:-1] if "copkit" in f.filename]
        self.found.append({"where": self.label, "frames": frames[-4:]})


def check_training(name: str, profile: str, dev: torch.device, log: SyncLog, x: torch.Tensor,
                   y: torch.Tensor, steps: int = 8) -> int:
    """Syncs in the steps of ``name``'s training on images ``x`` and labels ``y``, strictly between
    its first and last step."""
    trainee, tc = _training(name, profile, dev, x, y)
    tc = dataclasses.replace(tc, steps=steps, log_every=10**9, ckpt_every=10**9, compile=False)
    before = len(log.found)

    def step_fn(step: int, gen: torch.Generator):
        log.label = f"{name} step {step}" if 0 < step < steps - 1 else None
        return trainee.step_fn(step, gen)

    with tempfile.TemporaryDirectory() as d:
        train({name: trainee.model}, trainee.optimizers, step_fn, tc, d, {"sync-check": name},
              device=dev, progress=False)
    log.label = None
    return len(log.found) - before


def check_sampling(profile: str, dev: torch.device, log: SyncLog) -> int:
    """Syncs while the profile's MAR generates a batch (guided, the profile's step counts)."""
    from copkit.cmar import MAR, from_profile
    from copkit.profiles import get_profile

    sizes = get_profile(profile).cmar
    cfg, _ = from_profile(sizes, 0)
    model = MAR(cfg).to(dev).eval()
    labels = torch.arange(16, device=dev) % cfg.n_classes
    orders = torch.stack([torch.randperm(cfg.n_tokens) for _ in range(16)]).to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    before = len(log.found)
    with torch.inference_mode():
        # warm-up
        model.sample(labels, orders, steps=2, cfg_scale=sizes.cfg_scale, diffusion_steps=4,
                     generator=g)
        log.label = "MAR.sample"
        model.sample(labels, orders, steps=sizes.gen_steps, cfg_scale=sizes.cfg_scale,
                     diffusion_steps=sizes.diffusion_steps, generator=g)
        log.label = None
    return len(log.found) - before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--out", default=str(ROOT / "book" / "results" / "sync-check-gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("tools/sync_check.py: no CUDA GPU here; CUDA's sync debug mode needs one",
              file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    log = SyncLog()
    counts = {}
    x, y = load_fashion_mnist("train", limit=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = log.show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for name in ("comae", "mar", "cvit"):
                counts[f"{name} training"] = check_training(name, args.profile, dev, log, x, y)
            counts["MAR sampling"] = check_sampling(args.profile, dev, log)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    result = {"profile": args.profile, "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "syncs": counts, "where": log.found[:50]}
    atomic_write_json(args.out, result)
    for what, n in counts.items():
        print(f"{what:18s} {n:4d} host-device syncs")
    for f in log.found[:10]:
        print(f"  {f['where']}: {' <- '.join(reversed(f['frames']))}")
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
