"""The MAR pilot table: candidate MARs trained for 30-60 minutes each, side by side.

    python tools/mar_pilots.py --config copkit/configs/mar-pilots.yaml --folder data/pilots \
        --out book/results/mar-pilots

Every MAR section of a pretraining config (``mar`` and ``mar_<anything>``) that is shipped in
``--folder`` (``python -m copkit pretrain --config ... --only mar_w128 --out data/pilots``) gives
one row; one not shipped yet is listed with its parameter count and its bench numbers, and, when
its weights would not fit the 60 MB of ``data/pretrained/``, a note saying so. ``--render`` writes
the Markdown again from the ``.json`` alone. Writes ``<out>.json`` and ``<out>.md``
(atomically) and prints the Markdown table. The columns:

- parameters (counted on the loaded weights), steps, training minutes (summed over sessions), and
  the images/s the run recorded (steps x batch / training seconds: evaluations and checkpoints
  included);
- images/s and share of the large-matmul limit, measured now on this machine with ``make
  bench``'s own functions (``tools/bench.py``: ``train_cost``, ``matmul_flops``), so every
  candidate is timed the same way in one run (``--no-bench`` leaves them out);
- the final held-out loss (EMA weights), FID with CFG and without as mean +- sd over the sampling
  seeds beside the real-image floor measured the same way, FID on the ViT's features (the second
  feature space) beside its floor, class agreement with and without CFG, and precision / recall
  at k = 3 with CFG beside the floor's: all from the shipped ``.json``
  (:func:`copkit.pretrained._mar_metrics`). A file written before those numbers were over seeds is
  refused by name: its one-seed FID is not comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench import matmul_flops, train_cost  # noqa: E402
from ship_runs import LIMIT_MB, folder_mb  # noqa: E402

from copkit import fmt, pretrained  # noqa: E402
from copkit.io import atomic_write_json, atomic_write_text  # noqa: E402
from copkit.profiles import pick_device  # noqa: E402
from copkit.results import git_commit, markdown_table  # noqa: E402

#: the shipped numbers a row needs (each with ``_sd`` and ``_seeds`` but val_loss)
NEEDED = ("val_loss", "fid_cfg", "fid_nocfg", "fid_floor", "class_agreement_cfg",
          "class_agreement_nocfg", "precision_cfg", "recall_cfg", "precision_floor",
          "recall_floor")
#: images a timed step trains on (the batch is drawn from them)
BENCH_IMAGES = 4096
#: copies of the chosen MAR's weights the book ships: the base and the two fine-tunes whose
#: weights Chapter 4 keeps (its sample figures draw them; ``tools/ship_runs.py``)
SHIPPED_COPIES = 3


def candidates(config: dict) -> list[str]:
    """The MAR sections of a read pretraining config, in its order."""
    return [n for n in config if n not in ("name", "data") and pretrained.kind_of(n) == "mar"]


def pilot_row(name: str, config: dict, folder: Path) -> dict:
    """One candidate's row from its shipped file in ``folder``: ``shipped`` False when it is not
    there; a ValueError naming the file when its numbers are not over sampling seeds."""
    path = pretrained.path_of(name, config, folder)
    if not path.with_suffix(".json").exists():
        return {"name": name, "shipped": False, "file": path.name,
                "parameters": parameters(name, config)}
    meta = pretrained.info(name, config, folder)
    m = meta["metrics"]
    missing = [k for k in NEEDED if k not in m]
    missing += [f"{k}_seeds" for k in NEEDED if k != "val_loss" and f"{k}_seeds" not in m]
    if missing:
        raise ValueError(f"{path.with_suffix('.json')}: no {', '.join(missing[:4])}: it was scored "
                         "before the shipped numbers were means over sampling seeds; score it "
                         "again (delete the .json and .safetensors and rerun the pretrain "
                         "command, which resumes from its run folder) or leave it out")
    model = pretrained.load(name, "cpu", config, folder)
    batch = meta["config"]["train"]["batch_size"]
    row = {"name": name, "shipped": True, "file": path.name, "model": config[name]["model"],
           "parameters": sum(p.numel() for p in model.parameters()), "steps": meta["steps"],
           "batch_size": batch, "epochs": meta["epochs"],
           "train_minutes": meta["train_seconds"] / 60,
           "recorded_images_per_s": meta["steps"] * batch / meta["train_seconds"],
           "seeds": m.get("seeds"), "samples": m.get("samples"),
           "floor_images": m.get("floor_images")}
    row.update({k: v for k, v in m.items() if k.startswith(("fid", "class_agreement",
                                                              "precision", "recall", "val_loss"))})
    return row


def parameters(name: str, config: dict) -> int:
    """The parameter count of candidate ``name``, counted on a freshly built, untrained model."""
    p = pretrained.plan(name, config)
    return sum(t.numel() for t in p.recipe.build(p.model_cfg, p.data).parameters())


def shipped_mb(n_parameters: int, copies: int = SHIPPED_COPIES) -> float:
    """MB (2**20 bytes) a MAR of ``n_parameters`` takes in ``data/pretrained/`` as float32
    safetensors, ``copies`` times (the base and Chapter 4's fine-tunes shipped with weights)."""
    return copies * 4 * n_parameters / 2**20


def mark_base(rows: dict) -> None:
    """Mark (``"base": True``) the shipped pilot whose network is the book's base MAR's
    (``pretrain.yaml``'s ``mar`` section): the one trained on to convergence."""
    base = pretrained.read_config(pretrained.CONFIG)["mar"]["model"]
    for row in rows.values():
        row["base"] = bool(row["shipped"] and row.get("model") == base)


def room_mb(shipped: Path | None = None) -> float:
    """MB the 60 MB limit leaves for the base MAR and its shipped fine-tunes: the limit less
    what ``shipped`` (default: the book's ``data/pretrained/``) holds besides the shipped base MAR
    of ``pretrain.yaml`` and its fine-tunes (:data:`SHIPPED_COPIES` copies, as
    :func:`shipped_mb` counts them)."""
    shipped = shipped or ROOT / "data" / "pretrained"
    base = parameters("mar", pretrained.read_config(pretrained.CONFIG))
    return LIMIT_MB - (folder_mb(shipped) - shipped_mb(base))


def bench_rows(names: list[str], config: dict, device: str = "cpu", steps: int = 6,
               matmul_n: int | None = None) -> dict:
    """Images/s and share of the large-matmul limit of each candidate's training step, measured
    in one run on ``device`` with ``make bench``'s functions, on :data:`BENCH_IMAGES` training
    images; and the limit itself."""
    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    peak = matmul_flops(dev, sync, matmul_n)
    out = {"device": str(dev), "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "matmul_gflops": peak / 1e9,
           "steps": steps, "rows": {}}
    for name in names:
        p = pretrained.plan(name, config)
        data = dataclasses.replace(p.data, images=p.data.images[:BENCH_IMAGES],
                                   labels=p.data.labels[:BENCH_IMAGES])
        out["rows"][name] = train_cost(p.recipe, p.model_cfg, p.train_cfg, data, dev, sync, peak,
                                       steps)
    return out


def pilot_table(config: str | Path | dict, folder: str | Path, bench: bool = True,
                device: str = "cpu", bench_steps: int = 6, matmul_n: int | None = None) -> dict:
    """The pilot table of ``config``'s MAR candidates shipped in ``folder``, as the JSON
    ``tools/mar_pilots.py`` writes: ``pilots`` (a row per candidate, :func:`pilot_row`, with the
    bench's ``images_per_s`` and ``fraction_of_matmul`` when ``bench``), ``bench`` (the machine
    and the matmul limit), ``config``, ``folder``, ``commit``."""
    cfg = pretrained.read_config(config)
    names = candidates(cfg)
    if not names:
        raise ValueError(f"{config}: no MAR section (mar or mar_<anything>) to tabulate")
    rows = {n: pilot_row(n, cfg, Path(folder)) for n in names}
    mark_base(rows)
    out = {"config": str(pretrained.config_path(config) or cfg.get("name")),
           "folder": str(folder), "commit": git_commit(ROOT), "pilots": rows, "bench": None,
           "room_mb": room_mb()}
    if bench:
        out["bench"] = bench_rows(names, cfg, device, bench_steps, matmul_n)
        for name, b in out["bench"].pop("rows").items():
            rows[name].update({"images_per_s": b["images_per_s"],
                               "fraction_of_matmul": b["fraction_of_matmul"],
                               "gflop_per_image": b["gflop_per_image"]})
    return out


def _pm(row: dict, key: str, show) -> str:
    """``mean +- sd`` of a score over seeds."""
    return f"{show(row[key])} ± {show(row[f'{key}_sd'])}"


def markdown(table: dict) -> str:
    """The pilot table as Markdown, two tables narrow enough for the text column: what each
    candidate costs to train, and what its samples score. A candidate not shipped has its
    parameters, its bench numbers and dashes, and a note saying what shipping it would cost
    against the 60 MB limit of ``data/pretrained/`` (``tools/ship_runs.py``)."""
    costs = ["candidate", "parameters", "steps", "training min", "images/s", "share of matmul",
             "held-out loss"]
    scores = ["candidate", "FID CFG", "FID no CFG", "FID ViT CFG", "class agr. CFG / none",
              "P / R CFG"]
    cost_rows: list[list[str]] = []
    score_rows: list[list[str]] = []
    for name, r in table["pilots"].items():
        if not r["shipped"]:
            n = r.get("parameters")
            cost_rows.append([f"{name} (not trained)", fmt.count(n) if n else fmt.MISSING,
                              fmt.MISSING, fmt.MISSING, fmt.num(r.get("images_per_s"), 0),
                              fmt.share(r.get("fraction_of_matmul")), fmt.MISSING])
            score_rows.append([f"{name} (not trained)"] + [fmt.MISSING] * (len(scores) - 1))
            continue
        cost_rows.append([
            name, fmt.count(r["parameters"]), fmt.count(r["steps"]),
            fmt.num(r["train_minutes"], 0), fmt.num(r.get("images_per_s"), 0),
            fmt.share(r.get("fraction_of_matmul")), fmt.sig(r["val_loss"], 3)])
        score_rows.append([
            name, _pm(r, "fid_cfg", fmt.fid), _pm(r, "fid_nocfg", fmt.fid),
            _pm(r, "fid_vit_cfg", fmt.fid) if "fid_vit_cfg" in r else fmt.MISSING,
            f"{fmt.share(r['class_agreement_cfg'])} / {fmt.share(r['class_agreement_nocfg'])}",
            f"{fmt.num(r['precision_cfg'], 2)} / {fmt.num(r['recall_cfg'], 2)}"])
    lines = [markdown_table(costs, cost_rows), "", markdown_table(scores, score_rows)]
    shipped = [r for r in table["pilots"].values() if r["shipped"]]
    notes = []
    if shipped:
        r = shipped[0]
        seeds = ", ".join(map(str, r["seeds"]))
        vit_floor = (f", FID ViT {_pm(r, 'fid_vit_floor', fmt.fid)}" if "fid_vit_floor" in r
                     else "")
        notes.append(f"FID: mean ± sd over sampling seeds {seeds}, {fmt.count(r['samples'])} "
                     f"samples each, against the test images. The floor, as many disjoint draws "
                     f"of {r['floor_images']} real images scored the same way: FID "
                     f"{_pm(r, 'fid_floor', fmt.fid)}{vit_floor}, class agreement "
                     f"{fmt.share(r['class_agreement_floor'])}, P / R "
                     f"{fmt.num(r['precision_floor'], 2)} / {fmt.num(r['recall_floor'], 2)}.")
    for name, r in table["pilots"].items():
        room = table.get("room_mb")
        if (not r["shipped"] and r.get("parameters") and room is not None
                and shipped_mb(r["parameters"]) > room):
            notes.append(
                f"{name} is not trained: shipped as the base MAR with Chapter 4's two fine-tunes "
                f"that keep their weights, its {fmt.count(r['parameters'])} parameters would take "
                f"{SHIPPED_COPIES} × 4 bytes each, {fmt.num(shipped_mb(r['parameters']), 1)} MB, "
                f"more than the {fmt.num(room, 1)} MB the book's {LIMIT_MB:g} MB limit on "
                "shipped files leaves beside everything else shipped (the rule stated before "
                "the pilots, `copkit/configs/mar-pilots.yaml`).")
    b = table["bench"]
    notes.append("Images/s and share of matmul: not measured (--no-bench)." if b is None else
                 "Images/s and share of matmul: training steps measured in one run on "
                 f"{b['device']} ({b['cpu']}, {fmt.counted(b['threads'], 'threads')}), "
                 "large-matmul limit "
                 f"{fmt.sig(b['matmul_gflops'], 3)} GFLOP/s.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "copkit" / "configs" / "mar-pilots.yaml"),
                    help="the pilots' pretraining config")
    ap.add_argument("--folder", help="where the pilots were shipped (--out of python -m copkit "
                                     "pretrain)")
    ap.add_argument("--out", default=str(ROOT / "book" / "results" / "mar-pilots"),
                    help="writes the table to OUT with the suffixes .json and .md")
    ap.add_argument("--device", default="cpu", help="where the bench times the steps")
    ap.add_argument("--no-bench", action="store_true", help="leave out images/s and matmul share")
    ap.add_argument("--bench-steps", type=int, default=6, help="timed steps per candidate")
    ap.add_argument("--render", action="store_true",
                    help="no training folder: write the Markdown table again from the JSON at "
                         "--out (after a change to the layout), adding what an older file "
                         "lacks (the parameters of a candidate not trained, the room left in the "
                         "60 MB)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render:
        described = out.with_name(out.name + ".json")
        if not described.exists():
            ap.error(f"--render: no {described}; tabulate the pilots first (--folder)")
        table = json.loads(described.read_text())
        cfg = pretrained.read_config(args.config)
        for name, row in table["pilots"].items():
            if not row["shipped"] and "parameters" not in row:
                row["parameters"] = parameters(name, cfg)
        table.setdefault("room_mb", room_mb())
        mark_base(table["pilots"])
    else:
        if args.folder is None or not Path(args.folder).is_dir():
            ap.error(f"--folder {args.folder}: no such folder; give the --out the pilots were "
                     "shipped into (or --render to write the Markdown again from the .json)")
        table = pilot_table(args.config, args.folder, not args.no_bench, args.device,
                            args.bench_steps)
    text = markdown(table)
    atomic_write_json(out.with_name(out.name + ".json"), table)
    atomic_write_text(out.with_name(out.name + ".md"), text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
