"""`make bench`: speed and efficiency measurements, never part of the tests.

Writes book/results/bench.json and prints a table. Measured on this machine, in one run, so the
ratios compare like with like:

- CoMAE ``masks()``: images per second and masks (targets) per second for a batch of Fashion-MNIST
  images at the `cpu` (or given) profile's model size; its achieved FLOP/s (FLOPs counted with
  torch's FlopCounterMode, attention included through the math kernel) divided by the FLOP/s of
  one large matrix multiply on the same device.
- The exact Gaussian model of Chapter 1: fit, greedy order and prefix curves.
- Batched PageRank (copkit.rank) against networkx looped over the same graphs, N = 49 and 256.
- The CViT classifier (Chapter 5) at the profile's size: images per second keeping 100%, 50% and 22%
  of the 49 patch tokens, measured in one interleaved run, as ratios to 100%, beside the FLOP
  ratios (the limit a token drop could reach).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copkit.comae import CoMAE, CoMAEConfig  # noqa: E402
from copkit.cvit import N_TOKENS, CViTConfig, forward_flops, make_vit, n_keep, throughput  # noqa: E402
from copkit.data import load_fashion_mnist  # noqa: E402
from copkit.entropy import GaussianTokens  # noqa: E402
from copkit.io import atomic_write_json  # noqa: E402
from copkit.profiles import get_profile, pick_device  # noqa: E402
from copkit.rank import collapse_order, pagerank  # noqa: E402
from copkit.results import git_commit  # noqa: E402
from copkit.tokens import patchify, random_orders  # noqa: E402


def timed(fn, repeat: int = 3, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_flops(dev: torch.device, sync, n: int = 2048, dtype=torch.float32) -> float:
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    seconds = timed(lambda: a @ b, repeat=5, sync=sync)
    return 2 * n**3 / seconds


def bench_masks(profile: str, dev: torch.device, sync, images: int) -> dict:
    p = get_profile(profile).comae
    cfg = CoMAEConfig(enc_width=p.enc_width, enc_depth=p.enc_depth, enc_heads=p.enc_heads, dec_width=p.dec_width,
                      dec_depth=p.dec_depth, dec_heads=p.dec_heads)
    torch.manual_seed(0)
    model = CoMAE(cfg).to(dev).eval()
    x, _ = load_fashion_mnist("test", limit=images)
    tokens = patchify(x, 4).to(dev)
    seconds = timed(lambda: model.masks(tokens), repeat=3, sync=sync)
    end_to_end = timed(lambda: collapse_order(model.masks(tokens)), repeat=3, sync=sync)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.masks(tokens[:8], autocast=False)
    flops = counter.get_total_flops() / 8 * images
    peak = matmul_flops(dev, sync, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    return {"profile": profile, "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "masks_per_s": images * cfg.n_tokens / seconds, "gflop_per_image": flops / images / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "matmul_gflops": peak / 1e9,
            "fraction_of_matmul": flops / seconds / peak, "orders_per_s": images / end_to_end}


def bench_pagerank(graphs: int = 1000) -> dict:
    """Batched copkit.rank.pagerank against networkx.pagerank looped over the same graphs."""
    import networkx as nx
    import numpy as np

    out = {}
    for n in (49, 256):
        count = graphs if n == 49 else graphs // 10  # networkx at N=256 is slow: fewer graphs, same per-graph rate
        a = torch.rand(count, n, n, generator=torch.Generator().manual_seed(n))
        a.diagonal(dim1=1, dim2=2).zero_()
        t = time.perf_counter()
        ours = pagerank(a, tol=1e-10).scores
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = []
        for g in a.numpy():
            pr = nx.pagerank(nx.from_numpy_array(g, create_using=nx.DiGraph), alpha=0.85, tol=1e-10)
            ref.append([pr[i] for i in range(n)])
        t_nx = time.perf_counter() - t
        out[f"n{n}"] = {"graphs": count, "copkit_s": t_ours, "networkx_s": t_nx, "speedup": t_nx / t_ours,
                        "max_abs_diff": float(np.abs(ours.numpy() - np.array(ref)).max())}
    return out


def bench_entropy() -> dict:
    x, _ = load_fashion_mnist("train")
    tokens = patchify(x, 4)
    t = time.perf_counter()
    model = GaussianTokens.fit(tokens)
    fit = time.perf_counter() - t
    greedy = timed(model.greedy_order, repeat=1)
    orders = random_orders(64, 49)
    curves = timed(lambda: model.prefix_curve(orders), repeat=1)
    return {"fit_60000_s": fit, "greedy_order_s": greedy, "prefix_curves_per_s": 64 / curves}


def bench_cvit(profile: str, dev: torch.device, images: int) -> dict:
    """CViT's classifier at keep ratios 1.0, 0.5, 0.22: images/s in one run, and FLOP ratios."""
    p = get_profile(profile).cvit
    torch.manual_seed(0)
    vit = make_vit(CViTConfig(width=p.width, depth=p.depth, heads=p.heads, mlp_ratio=p.mlp_ratio)).to(dev).eval()
    x, _ = load_fashion_mnist("test", limit=images)
    keeps = {1.0: N_TOKENS, 0.5: n_keep(0.5), 0.22: n_keep(0.78)}
    ips = throughput(vit, list(keeps.values()), x)
    flops = {k: forward_flops(vit, k) for k in keeps.values()}
    full = keeps[1.0]
    return {"profile": profile, "images": images, "width": p.width, "depth": p.depth,
            "keep": {str(r): {"tokens": k, "images_per_s": ips[k], "speedup": ips[k] / ips[full],
                              "gflop_per_image": flops[k] / 1e9, "flop_ratio": flops[full] / flops[k]}
                     for r, k in keeps.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "book" / "results" / "bench.json"))
    args = ap.parse_args()
    dev = pick_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    result = {
        "commit": git_commit(ROOT), "device": str(dev), "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "comae_masks": bench_masks(args.profile, dev, sync, args.images),
        "gaussian_entropy": bench_entropy(),
        "pagerank": bench_pagerank(),
        "cvit": bench_cvit(args.profile, dev, max(args.images, 1000)),
    }
    atomic_write_json(args.out, result)
    m = result["comae_masks"]
    print(f"device {dev} ({result['gpu'] or result['cpu']}, {result['threads']} threads), commit {result['commit'][:12]}")
    print("| measurement | value |\n|---|---|")
    print(f"| CoMAE masks(), {args.profile} size: images/s | {m['images_per_s']:.1f} |")
    print(f"| CoMAE masks(): masks (targets)/s | {m['masks_per_s']:.0f} |")
    print(f"| collapse orders end to end (masks + PageRank): images/s | {m['orders_per_s']:.1f} |")
    print(f"| CoMAE masks(): GFLOP per image | {m['gflop_per_image']:.3f} |")
    print(f"| achieved GFLOP/s / large-matmul GFLOP/s | {m['achieved_gflops']:.1f} / {m['matmul_gflops']:.1f} = {m['fraction_of_matmul']:.1%} |")
    e = result["gaussian_entropy"]
    print(f"| Gaussian model: fit on 60,000 images | {e['fit_60000_s']:.2f} s |")
    print(f"| Gaussian model: greedy order | {e['greedy_order_s']:.2f} s |")
    print(f"| Gaussian model: prefix curves per second | {e['prefix_curves_per_s']:.1f} |")
    for key, r in result["pagerank"].items():
        print(f"| PageRank, {r['graphs']} graphs of N={key[1:]}: copkit batched vs networkx looped | "
              f"{r['copkit_s']:.3f} s vs {r['networkx_s']:.2f} s ({r['speedup']:.0f}x), max |diff| {r['max_abs_diff']:.1e} |")
    c = result["cvit"]
    for r, k in c["keep"].items():
        print(f"| CViT classifier ({c['width']}x{c['depth']}), keep {float(r):.0%} ({k['tokens']} tokens): images/s, "
              f"speed-up vs 100% / FLOP ratio | {k['images_per_s']:,.0f}, {k['speedup']:.2f}x / {k['flop_ratio']:.2f}x |")
    print(f"written to {Path(args.out).relative_to(ROOT) if Path(args.out).is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
