"""How image-specific a CoMAE's collapse orders are, on Fashion-MNIST test images.

For a shipped CoMAE (``--name comae``, from the pretraining config) or a training run's checkpoint
(``--run data/runs/comae-<hash8>``, its EMA weights), ranks ``--images`` test images and reports:

- ``image_specific``: the share of the selector's logit variance that involves the image
  (:func:`copkit.comae.logit_variance_split`, on the first 200 images); 0 = one set of masks
  for all;
- ``distinct_first``, ``distinct_top``: how many different first patches and different sets of the
  top 22% patches the images have; ``fixed_overlap``: the share of an image's top 22% that the
  best fixed order also puts first (1 = one order for all); ``footrule_within`` /
  ``footrule_across``: the Spearman footrule between two images' orders, same class and different
  classes (0 = one order, 1 = unrelated orders) (:func:`copkit.rank.order_diversity`);
- ``object_share_top22`` beside ``object_share_random``: the share of the top 22% patches on the
  object, and what a random order's top 22% holds on the same images (the image's object share);
- with ``--against RUN`` (another run's folder, e.g. an earlier copy of the same run, or another
  seed): ``against.footrule_same_image``, the footrule between the two CoMAEs' orders of the same
  image (0 = the same orders), and ``against.top_overlap``, the share of an image's top 22% both
  put first: whether the orders still change late in training, or agree across seeds.

    python tools/order_report.py --name comae --config copkit/configs/pretrain.yaml
    python tools/order_report.py --run data/runs/comae-<hash8> --against <run> --out report.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copkit import pretrained  # noqa: E402
from copkit.checkpoint import load_weights  # noqa: E402
from copkit.comae import CoMAE, CoMAEConfig, logit_variance_split  # noqa: E402
from copkit.data import load_fashion_mnist  # noqa: E402
from copkit.io import atomic_write_json  # noqa: E402
from copkit.rank import (  # noqa: E402
    collapse_order,
    footrule,
    keep_top,
    order_diversity,
    top_overlap,
)
from copkit.tokens import PATCH, object_patches, patchify  # noqa: E402


def load_run(run: Path, name: str = "comae") -> CoMAE:
    """A CoMAE with the EMA weights of a training run's checkpoint."""
    cfg = json.loads((run / "config.json").read_text())["config"][name]
    model = CoMAE(CoMAEConfig(**{**cfg, "grid": tuple(cfg["grid"])}))
    load_weights(run, name, model, ema=True)
    return model.eval()


def report(model: CoMAE, images: torch.Tensor, labels: torch.Tensor, keep: float = 0.22) -> dict:
    """The measures of the module docstring for ``images`` in [-1, 1] (B, 1, 28, 28)."""
    tokens = patchify(images, PATCH)
    with torch.no_grad():
        orders = collapse_order(model.masks(tokens))
        split = logit_variance_split(model, tokens[:200])
    out = {"images": int(images.shape[0]), "image_specific": split["image_specific"],
           **order_diversity(orders, labels, keep)}
    obj = object_patches(images)
    out["object_share_top22"] = float(obj.gather(1, keep_top(orders, keep)).double().mean())
    out["object_share_random"] = float(obj.double().mean())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--name", help="a shipped CoMAE of the pretraining config (comae, comae0)")
    src.add_argument("--run", type=Path, help="a training run's folder (data/runs/comae-<hash8>)")
    ap.add_argument("--config", help="the pretraining config of --name (default: the shipped one)")
    ap.add_argument("--images", type=int, default=2000, help="test images to rank (default 2000)")
    ap.add_argument("--against", type=Path, help="another run's folder: compare its orders of the "
                    "same images with these, image by image")
    ap.add_argument("--out", type=Path, help="write the report here as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = (pretrained.load(args.name, config=args.config) if args.name
             else load_run(args.run, args.run.name.split("-")[0]))
    x, y = load_fashion_mnist("test")
    out = report(model, x[:args.images], y[:args.images])
    out["source"] = args.name or str(args.run)
    if args.against:
        other = load_run(args.against, args.against.name.split("-")[0])
        tokens = patchify(x[:args.images], PATCH)
        with torch.no_grad():
            a, b = collapse_order(model.masks(tokens)), collapse_order(other.masks(tokens))
        out["against"] = {"source": str(args.against),
                          "footrule_same_image": float(footrule(a, b).mean()),
                          "top_overlap": float(top_overlap(a, b, 0.22).mean())}
    print(json.dumps(out, indent=1))
    if args.out:
        atomic_write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
