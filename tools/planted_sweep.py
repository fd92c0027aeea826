"""Train CoMAE selector variants on the planted truths (copkit.planted) over seeds and record each
run's hit rate, the untrained selector's, and whether g used the partner
(copkit.planted.partner_error): the evidence behind CoMAEConfig.readout / pos_embed / tau_min
(data/pretrained/planted-sweep.json holds the runs made so far; copkit.planted.summarize turns them
into one line per setting).

    python tools/planted_sweep.py --out data/runs/planted-sweep.json --jobs 2
        [--variants literal pos+token ...] [--kinds mirror dipole] [--seeds 0 1 2] [--steps 2000]
        [--lambda-c 1.0] [--set tau_min=0.1 g_warmup_steps=1000] [--train batch_size=4]

Each run is one process thread; --jobs runs that many at once. Results are written atomically after
every run, and a run already in the output file is not trained again (resume after a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copkit.comae import CoMAEConfig  # noqa: E402
from copkit.planted import VARIANTS, planted_configs  # noqa: E402


def one(variant: str, kind: str, seed: int, steps: int, lambda_c: float, data_dir: str,
        overrides: dict, train: dict) -> dict:
    import torch

    from copkit.comae import CoMAE
    from copkit.planted import (
        chance,
        fit_planted,
        flip_split,
        partner_error,
        partner_hits,
        partner_ranks,
        planted,
    )

    torch.set_num_threads(1)
    cfg, tc = planted_configs(variant, seed, steps=steps, lambda_c=lambda_c, train=train,
                              **overrides)
    test = planted(kind, 500, cfg.grid, cfg.token_dim, seed=1)
    # the untrained selector fit starts from: a content-sensitive readout can start above chance
    torch.manual_seed(seed)
    init_hit = partner_hits(CoMAE(cfg), test)
    t0 = time.time()
    fitted, hit = fit_planted(kind, cfg, tc, data_dir)
    ranks = partner_ranks(fitted.model, test)
    return {"variant": variant, "kind": kind, "seed": seed, "steps": steps, "lambda_c": lambda_c,
            "set": overrides, **({"train": train} if train else {}), "hit": hit,
            "top3": float((ranks < 3).float().mean()), "init_hit": init_hit,
            **partner_error(fitted.model, test),
            "chance": chance(cfg.n_tokens), "seconds": time.time() - t0, "run": fitted.hash[:8],
            **(flip_split(fitted.model, test, cfg.grid[1]) if kind == "flip" else {}),
            **g_alone(Path(data_dir) / "runs" / f"comae-{fitted.hash[:8]}", cfg.g_warmup_steps)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/runs/planted-sweep.json")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--kinds", nargs="+", default=["mirror", "dipole"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lambda-c", type=float, default=0.01)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="CoMAEConfig fields for every run (JSON values), e.g. g_warmup_steps=1000")
    ap.add_argument("--train", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="TrainConfig fields for every run (JSON values), e.g. batch_size=4")
    ap.add_argument("--rescore", action="store_true",
                    help="add copkit.planted.flip_split to the flip rows that lack it, and g's "
                         "held-out L_r at the end of its steps alone to every row, from their "
                         "finished runs in --data-dir (trains nothing; a run not there is named "
                         "and its row left as it is)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    saved = json.loads(out.read_text()) if out.exists() else []
    # the shipped file: {"about": ..., "rows": [...]}
    rows = saved["rows"] if isinstance(saved, dict) else saved
    if a.rescore:
        for r in rows:
            if "g_alone_L_r" not in r:
                r.update(g_alone(Path(a.data_dir) / "runs" / f"comae-{r['run']}",
                                 r.get("set", {}).get("g_warmup_steps",
                                                      CoMAEConfig.g_warmup_steps)))
            if r["kind"] == "flip" and "mask_mean" not in r:
                try:
                    r.update(rescore(r, a.data_dir))
                except FileNotFoundError as missing:
                    print(f"left as it is: {missing}", flush=True)
                    continue
                print(f"{r['variant']} seed {r['seed']} {r['run']}: "
                      f"top-bottom {r['hit_top_bottom']:.1%}, "
                      f"left-right {r['hit_left_right']:.1%}", flush=True)
        write(out, saved, rows)
        return 0
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    train = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.train)}
    key = json.dumps({**overrides, **({"train": train} if train else {})}, sort_keys=True)
    done = {(r["variant"], r["kind"], r["seed"], r["steps"], r["lambda_c"],
             json.dumps({**r.get("set", {}), **({"train": r["train"]} if r.get("train") else {})},
                        sort_keys=True))
            for r in rows}
    todo = [(v, k, s) for s in a.seeds for v in a.variants for k in a.kinds
            if (v, k, s, a.steps, a.lambda_c, key) not in done]
    with ProcessPoolExecutor(a.jobs) as pool:
        futs = [pool.submit(one, v, k, s, a.steps, a.lambda_c, a.data_dir, overrides, train)
                for v, k, s in todo]
        for f in as_completed(futs):
            r = f.result()
            rows.append(r)
            print(f"{r['variant']:>10} {key} {r['kind']:>6} seed {r['seed']}: hit {r['hit']:.1%} "
                  f"(chance {r['chance']:.1%}) {r['seconds']:.0f} s", flush=True)
            write(out, saved, rows)
    return 0


def write(out: Path, saved, rows: list[dict]) -> None:
    """The rows into ``out`` atomically, in the shape it was read (a list, or {"about", "rows"})."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({**saved, "rows": rows} if isinstance(saved, dict) else rows,
                              indent=1))
    os.replace(tmp, out)


def g_alone(run: Path, g_warmup_steps: int) -> dict:
    """``{"g_alone_L_r": ...}``: the held-out L_r of a run at the last evaluation before f's first
    step (how much g learned in its steps alone), read from the run's metrics.jsonl; {} when the
    run folder is not there or has no evaluation by then."""
    from copkit.checkpoint import read_metrics

    evals = [r for r in read_metrics(run / "metrics.jsonl", partial_ok=True)
             if r.get("eval") and 0 < r["step"] <= g_warmup_steps]
    return {"g_alone_L_r": evals[-1]["val_L_r"], "g_alone_step": evals[-1]["step"]} if evals else {}


def rescore(row: dict, data_dir: str) -> dict:
    """:func:`copkit.planted.flip_split` of a finished flip run, from its run folder (never
    trains)."""
    import torch

    from copkit.planted import fit_planted, flip_split, planted, planted_configs

    run = Path(data_dir) / "runs" / f"comae-{row['run']}"
    if not (run / "checkpoint.safetensors").exists():
        raise FileNotFoundError(f"{run}: the run of {row['variant']} {row['kind']} "
                                f"seed {row['seed']} is "
                                "not there to rescore; give the --data-dir it was trained in")
    cfg, tc = planted_configs(row["variant"], row["seed"], steps=row["steps"],
                              lambda_c=row["lambda_c"], train=row.get("train"),
                              **row.get("set", {}))
    torch.set_num_threads(1)
    fitted, _ = fit_planted("flip", cfg, tc, data_dir)  # finished: loaded, not trained
    return flip_split(fitted.model, planted("flip", 500, cfg.grid, cfg.token_dim, seed=1),
                      cfg.grid[1])


if __name__ == "__main__":
    raise SystemExit(main())
