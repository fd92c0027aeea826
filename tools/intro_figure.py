"""The introduction's "idea in one picture": book/figures/idea.png.

For three Fashion-MNIST test images: the image, CoMAE's collapse order drawn over it (PageRank on
its mask graph; circles larger the earlier a patch comes, the first 11 joined in order), and the
top 22% of the order kept, the rest hidden: what CViT classifies from and what CMAR generates
after. Uses the CoMAE that Chapter 2 saved in data/ for the profile (default ``cpu``); run that
chapter first if it is missing.

    python tools/intro_figure.py [--profile cpu] [--out book/figures/idea.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "book" / "figures" / "idea.png"))
    parser.add_argument("--classes", default="9,0,8",
                        help="one test image of each of these classes")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from copkit import pretrained, viz
    from copkit.data import CLASSES, load_fashion_mnist
    from copkit.profiles import get_profile
    from copkit.rank import collapse_order
    from copkit.tokens import GRID, PATCH, SIDE, patchify, unpatchify

    profile = get_profile(args.profile)
    comae, digest = pretrained.base(profile, "comae", args.data_dir, "cpu")
    x, y = load_fashion_mnist("test", limit=1000)
    picks = [int((y == int(c)).nonzero()[0]) for c in args.classes.split(",")]
    images = x[picks]
    with torch.no_grad():
        orders = collapse_order(comae.masks(patchify(images, PATCH)).double())
    n, top = orders.shape[1], 11  # 11 of 49 patches: the paper's 22%

    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "font.size": 9})
    fig, axes = plt.subplots(len(picks), 3, figsize=(6.6, 2.25 * len(picks)))
    for r, i in enumerate(picks):
        kept = patchify(images[r:r + 1], PATCH).clone()
        kept[0, orders[r, top:]] = 0.0  # hidden patches drawn mid-grey
        viz.show_image(images[r], axes[r, 0], "an image" if r == 0 else None)
        viz.draw_collapse(images[r], orders[r], (GRID, GRID), top=top, ax=axes[r, 1],
                          title="its collapse order" if r == 0 else None)
        viz.show_image(unpatchify(kept, PATCH, (1, SIDE, SIDE))[0], axes[r, 2],
                       f"the first {top} of {n} patches" if r == 0 else None)
        axes[r, 0].set_ylabel(CLASSES[int(y[i])], fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    print(f"{out} (CoMAE {digest[:8]}, profile {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
