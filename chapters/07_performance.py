# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Performance
#
# *Source:* [`chapters/07_performance.py`](../chapters/07_performance.py), a jupytext script: open it in JupyterLab as a
# notebook, or run it with `python tools/run_chapters.py 07_performance --profile smoke` (into `.scratch/book/smoke/`).
#
# How fast the pieces of `copkit` run, and against what limit. The numbers are those `make bench`
# last wrote to `book/results/bench.json` (`tools/bench.py`; never part of the tests), rendered here
# as they are, with the machine and the commit that measured them. A speed means little alone, so
# each is set beside a limit measured in the same run: a large matrix multiply on the same device
# (the practical {term}`FLOP`/s ceiling, the {term}`matmul limit`), networkx looping over the same graphs, or the
# FLOP ratio a token drop could reach at best.

# %% tags=["parameters"]
bench_file = "../book/results/bench.json"  # what make bench wrote
notebooks_dir = "../book"  # the executed chapters, for their run times
results_dir = "../book/results"  # runtimes-<profile>.json of tools/run_chapters.py
smoke_results_dir = "../.scratch/book/results"  # make test's smoke run times
pilots_file = "../book/results/mar-pilots.json"  # what tools/mar_pilots.py wrote
pretrained_file = "../book/results/pretrained.json"  # the shipped base models' numbers

# %% tags=["remove-input"]
import json
from pathlib import Path

from IPython.display import Markdown, display

from copkit import fmt
from copkit.results import (
    BASE_MODEL_TARGETS,
    RUNTIME_READERS,
    markdown_table,
    read_runtimes,
    runtimes_hosts,
    runtimes_table,
)
from copkit.tokens import N_TOKENS

path = Path(bench_file)
if not path.exists():
    raise FileNotFoundError(f"{path.resolve()} does not exist: run `make bench` first")
bench = json.loads(path.read_text())
display(Markdown(f"Measured on `{bench['device']}` ({bench['cpu']}, {bench['threads']} threads"
                 + (f", GPU {bench['gpu']}" if bench.get("gpu") else "")
                 + f"), torch {bench['torch']}, commit `{bench['commit'][:12]}`."))

# %% [markdown]
# ## CoMAE masks and collapse orders
#
# `CoMAE.masks` runs the selector once per target patch, N times per image; the {term}`collapse order` adds
# a batched {term}`PageRank`. The achieved FLOP/s is the selector's counted FLOPs per image times the
# images per second. Two changes made it faster without changing a mask beyond float rounding:
#
# - only the [cls] output of the selector's last block is read, so that block runs for [cls]
#   alone (`copkit.comae.first_token_block`: every token's keys and values, one query);
# - `masks(compiled=True)` runs the selector through `torch.compile`, which fuses the element-wise
#   work (GELU, LayerNorm, RoPE, copies) that dominates a forward this narrow on a CPU.
#   `make orders` compiles when it ranks the whole data set.

# %% tags=["remove-input"]
m = bench["comae_masks"]
variants = [("last block in full (before)", "_full_last_block"), ("last block for [cls] only", ""),
            ("the same, compiled", "_compiled")]
rows = [[name, fmt.num(m[f"images_per_s{key}"], 1), fmt.share(m[f"fraction_of_matmul{key}"])]
        for name, key in variants if f"images_per_s{key}" in m]
display(Markdown(
    f"Masks of all {N_TOKENS} targets, `{m['profile']}` profile's CoMAE, "
    f"{m.get('threads', bench['threads'])} threads in one process:\n\n"
    + markdown_table(["selector forward", "images per second", "share of the matmul limit"], rows)
    + "\n\n" + markdown_table(["measure", "value"], [
        ["collapse orders per second, end to end", fmt.num(m["orders_per_s"], 1)],
        *([["the same, compiled", fmt.num(m["orders_per_s_compiled"], 1)]]
          if "orders_per_s_compiled" in m else []),
        ["GFLOP per image (counted, last block for [cls] only)", fmt.sig(m["gflop_per_image"], 3)],
        ["large-matmul GFLOP/s on the same device", fmt.num(m["matmul_gflops"], 1)],
    ])))

# %% [markdown]
# ## CoMAE training
#
# Steps per second of the profile's CoMAE as it is trained (the alternating step: one batch updates
# the selector f, the next the reconstructor g), with the FLOPs of a forward and backward pass
# counted, against the same matmul limit.

# %% tags=["remove-input"]
if "comae_training" in bench:
    t = bench["comae_training"]
    display(Markdown(markdown_table(["measure", "value"], [
        [f"training steps per second (`{t['profile']}` profile: {t['batch_images']} images x "
         f"{t['targets_per_image']} targets per step)", fmt.num(t["steps_per_s"], 1)],
        ["GFLOP per step (forward and backward, counted)", fmt.sig(t["gflop_per_step"], 3)],
        ["achieved GFLOP/s", fmt.num(t["achieved_gflops"], 1)],
        ["share of the matmul limit", fmt.share(t["fraction_of_matmul"])],
    ])))
else:
    display(Markdown("This bench file predates the CoMAE training section: run `make bench`."))

# %% [markdown]
# ## Training the base models
#
# The base models of `make pretrain` (`copkit/configs/pretrain.yaml`) are trained once for the
# whole book. For each: training images per second at the `cpu` profile's chapter setting it
# replaced ("before": each chapter once trained its own model from scratch at that size), at the
# pretrain setting ("after"), and the seconds one epoch of 55,000 images costs over batch sizes at
# the pretrain width. The "before" models are the chapters' smaller ones, so their images per
# second say less than the epoch costs. The cheapest batch is not always the config's: a smaller
# batch takes more optimiser steps per epoch (the CoMAEs train at 16), and the config was set
# before this table was measured. The share of the matmul limit is the counted FLOPs per image
# times the images per second.

# %% tags=["remove-input"]
if "pretrain" in bench:
    rows = []
    for name, r in bench["pretrain"].items():
        old, new = r.get("before"), r["after"]
        best = min(r["batches"], key=lambda b: b["epoch_s"])
        rows.append([
            name,
            f"{fmt.num(old['images_per_s'], 0)} (batch {old['batch']})" if old else fmt.MISSING,
            f"{fmt.num(new['images_per_s'], 0)} (batch {new['batch']})",
            fmt.share(new["fraction_of_matmul"]),
            ", ".join(f"{b['batch']}: {fmt.num(b['epoch_s'], 0)} s" for b in r["batches"]),
            best["batch"]])
    display(Markdown(
        f"Measured at commit `{bench.get('pretrain_commit', bench['commit'])[:12]}`.\n\n"
        + markdown_table(["base model", "images/s before", "images/s after",
                          "after, share of matmul limit", "epoch seconds by batch",
                          "cheapest batch"], rows)))
else:
    display(Markdown("Not measured yet: run `python tools/bench.py --only-pretrain` on an idle machine."))

# %% [markdown]
# ## Choosing the base MAR: pilots of equal time
#
# The first shipped `mar` was small (281k parameters: width 64, 2 + 2 blocks, a diffusion head 64
# wide), and its samples were far from Fashion-MNIST by FID. Before a larger one was trained to
# convergence, candidates of `copkit/configs/mar-pilots.yaml` were each trained for about 45 minutes
# of one CPU thread (equal time, not equal steps) and scored as the shipped models are: FID with and without
# {term}`CFG` as mean ± sd over three sampling seeds of 1,000 samples, beside the real-image floor
# drawn and scored the same way, FID on the ViT's features as a second feature space, class
# agreement, and precision and recall at k = 3 (`tools/mar_pilots.py`). Each pilot is one training,
# so the ± is the spread of sampling alone, not of training: a small gap between two pilots is not
# a ranking.

# %% tags=["remove-input"]
pilots_path = Path(pilots_file)
if pilots_path.exists():
    pilots = json.loads(pilots_path.read_text())
    shipped = {n: r for n, r in pilots["pilots"].items() if r["shipped"]}
    display(Markdown(pilots_path.with_suffix(".md").read_text()))
    if len(shipped) >= 2:
        ranked = sorted(shipped, key=lambda n: shipped[n]["fid_cfg"])
        best, second = shipped[ranked[0]], shipped[ranked[1]]
        gap = second["fid_cfg"] - best["fid_cfg"]
        apart = gap > 2 * max(best["fid_cfg_sd"], second["fid_cfg_sd"])
        display(Markdown(
            f"`{ranked[0]}` has the lowest FID with CFG, {fmt.fid(best['fid_cfg'])} ± "
            f"{fmt.fid(best['fid_cfg_sd'])}, against {fmt.fid(second['fid_cfg'])} ± "
            f"{fmt.fid(second['fid_cfg_sd'])} for `{ranked[1]}`: a gap of {fmt.fid(gap)}, "
            + ("more than twice the larger sampling spread."
               if apart else "within twice the larger sampling spread, so not a ranking.")
            + f" The real-image floor is {fmt.fid(best['fid_floor'])}."))
    # the chosen pilot, trained to convergence: the shipped base MAR, against the book's aim
    FID_TARGET = BASE_MODEL_TARGETS["mar", "fid_cfg"][1]  # FID with CFG, mean of 3 seeds
    base = json.loads(Path(pretrained_file).read_text())["models"]["mar"]
    bm = base["metrics"]
    over = bm["fid_cfg"] - FID_TARGET
    # the pilot whose network is the shipped base MAR's (marked by tools/mar_pilots.py)
    chosen = [n for n, r in shipped.items() if r.get("base")]
    if len(chosen) != 1:
        raise ValueError(f"{pilots_path}: {len(chosen)} pilots are marked as the shipped base "
                         "MAR; expected one (python tools/mar_pilots.py --render)")
    chosen = chosen[0]
    display(Markdown(
        f"`{chosen}` was chosen by the rule stated before the pilots were scored (the lowest FID "
        "with CFG among those that fit the 60 MB with Chapter 4's shipped fine-tunes; "
        "`copkit/configs/mar-pilots.yaml`) and trained to convergence as the shipped `mar` "
        f"({base['steps']:,} steps, "
        f"{base['epochs']} epochs; Chapter 4 shows its learning curve). Over "
        f"{len(bm['seeds'])} sampling seeds of {bm['samples']:,} images its FID with CFG is "
        f"{fmt.fid(bm['fid_cfg'])} ± {fmt.fid(bm['fid_cfg_sd'])} (the pilot's "
        f"{fmt.fid(shipped[chosen]['fid_cfg'])}), against a floor of "
        f"{fmt.fid(bm['fid_floor'])}: "
        + (f"the aim of FID {FID_TARGET:g} or less is met." if over <= 0 else
           f"the aim of FID {FID_TARGET:g} or less is missed by {fmt.fid(over)}, "
           f"{bm['fid_cfg'] / bm['fid_floor']:.0f} times the floor.")
        + f" On the ViT's features it is {fmt.num(bm['fid_vit_cfg'], 2)} against "
        f"{fmt.num(bm['fid_vit_floor'], 2)}; the classifier gives the asked-for class to "
        f"{fmt.share(bm['class_agreement_cfg'])} with CFG and "
        f"{fmt.share(bm['class_agreement_nocfg'])} without (real images: "
        f"{fmt.share(bm['class_agreement_floor'])}), and recall at k = 3 is "
        f"{fmt.num(bm['recall_cfg'], 2)} against {fmt.num(bm['recall_floor'], 2)}."))
else:
    display(Markdown("No pilots tabulated yet: train them and run `python tools/mar_pilots.py "
                     "--folder data/pilots` (commands in `copkit/configs/mar-pilots.yaml`)."))

# %% [markdown]
# ## What one training step costs, in operators
#
# Each model's training step as `copkit.train.train` runs it (the profile's precision, gradient
# clipping, the optimiser, the {term}`EMA`), timed and its {term}`ATen operators <ATen operator>` counted, each the difference of
# two runs of different lengths so that start-up costs cancel. Every operator is at least one
# {term}`kernel launch` on a GPU; the book's models are small, so there a step costs its launches more than
# its FLOPs, and microseconds per operator times a chapter's operators is how the `gpu` profile
# is sized (`copkit/configs/gpu.yaml`).

# %% tags=["remove-input"]
if "step_costs" in bench:
    display(Markdown(markdown_table(
        ["training", "batch", "precision", "ms per step", "ATen operators per step",
         "us per operator"],
        [[name, r["batch"], r["precision"], fmt.num(r["ms_per_step"], 1),
          fmt.num(r["ops_per_step"], 0), fmt.num(r["us_per_op"], 1)]
         for name, r in bench["step_costs"].items()])))
else:
    display(Markdown("This bench file predates the step-cost section: run `make bench`."))

# %% [markdown]
# ### Does a step ever wait for the GPU?
#
# A launch-bound step is fast only while the host runs ahead of the GPU, queueing kernels. Reading
# a value on the host, copying from ordinary (pageable) host memory, or a shape that depends on
# data makes the host wait until the GPU has caught up: a {term}`host-device sync`. `tools/sync_check.py`
# trains each model for a few steps, and samples with MAR, under CUDA's sync debug mode and counts
# the syncs between the logging steps (which read the loss on purpose); `scripts/gpu_book.sh` runs
# it on the GPU before the chapters.

# %% tags=["remove-input"]
sync_path = Path(results_dir) / "sync-check-gpu.json"
if sync_path.exists():
    sc = json.loads(sync_path.read_text())
    display(Markdown(f"On {sc['gpu']}, torch {sc['torch']}, `{sc['profile']}` profile:\n\n"
                     + markdown_table(["inner loop", "host-device syncs"],
                                      list(sc["syncs"].items()))))
else:
    display(Markdown("Not measured yet: CUDA's sync debug mode needs a CUDA GPU, and none has "
                     "run this book."))

# %% [markdown]
# ## Does `torch.compile` pay?
#
# The same training steps, eager and with every transformer block compiled ({term}`torch.compile`)
# (`copkit.step.compile_blocks`, what a profile's `compile: true` switches on), after a warm-up
# that pays for the compilation; its seconds are shown apart, since a short run may never earn
# them back. A profile turns compilation on only where this table, measured on its device, says
# it pays.

# %% tags=["remove-input"]
if "compile" in bench:
    display(Markdown(markdown_table(
        ["training", "precision", "steps/s eager", "steps/s compiled", "speed-up",
         "compile warm-up"],
        [[name, r["precision"], fmt.num(r["eager"]["steps_per_s"], 1),
          fmt.num(r["compiled"]["steps_per_s"], 1), f"{fmt.num(r['speedup'], 2)}x",
          fmt.duration(r["compiled"]["warmup_s"])] for name, r in bench["compile"].items()])))
else:
    display(Markdown("This bench file predates the compile section: run `make bench`."))

# %% [markdown]
# ## What the paper's setting costs
#
# The configurations in `configs/paper/` at the paper's sizes (ImageNet 256, the KL-16 {term}`tokens <token>`,
# CoMAE 12 + 12 blocks, MAR-B, ViT-B/16). For each, one training step at a small batch was timed
# and its FLOPs counted on the device above; both scale linearly to the configured batch and
# number of steps. The hours on this device are that measurement extrapolated; the H200 hours
# divide the counted FLOPs by an *assumed* 40% of the H200's dense {term}`bf16` peak (the {term}`MFU`), a typical share for
# transformer training, not a measurement (run `make bench` on the GPU to replace it). The
# collapse orders of ImageNet-1k are the paper-size CoMAE's `masks()` for all 1,331,167 images.

# %% tags=["remove-input"]
if "paper" in bench:
    a = bench["paper"]["assumption"]
    runs = {k: r for k, r in bench["paper"].items() if k != "assumption"}
    rows = []
    for r in runs.values():
        what = (f"{fmt.count(r['steps'])} steps x {fmt.count(r['batch'])} images, "
                f"{fmt.num(r['tflop_per_step'], 1)} TFLOP/step" if "steps" in r
                else f"{fmt.count(r['images'])} images, {fmt.num(r['gflop_per_image'], 0)} "
                "GFLOP/image")
        rows.append([f"`{r['config']}`", what, fmt.duration(r["hours_this_device"] * 3600),
                     fmt.num(r["h200_hours_at_assumed_mfu"], 1)])
    longest = runs[max(runs, key=lambda k: runs[k]["hours_this_device"])]
    display(Markdown(
        markdown_table(["configuration", "work", "time on this device", "H200 hours (assumed)"],
                       rows)
        + f"\n\nH200: {fmt.num(a['h200_bf16_dense_flops'] / 1e12, 0)} TFLOP/s dense bf16 at "
        f"{fmt.share(a['assumed_mfu'], 0)} utilisation (assumed). On this device "
        f"({bench['cpu']}, {bench['threads']} threads) `{longest['config']}` alone would run "
        f"for {fmt.duration(longest['hours_this_device'] * 3600)}, against "
        f"{fmt.num(longest['h200_hours_at_assumed_mfu'], 0)} hours on one H200 at the assumed "
        "utilisation: the paper's setting needs GPUs, which is why the chapters work at "
        "Fashion-MNIST's size and the `gpu` profile exists."))
else:
    display(Markdown("This bench file predates the paper-size section: run `make bench`."))

# %% [markdown]
# ## Batched PageRank against networkx
#
# Both on the CPU, whatever device the rest of the bench ran on: networkx has no GPU.

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["N", "graphs", "copkit (s)", "networkx (s)", "speed-up", "max abs. difference"],
    [[k[1:], fmt.count(r["graphs"]), fmt.num(r["copkit_s"], 3), fmt.num(r["networkx_s"], 2),
      f"{fmt.num(r['speedup'], 0)}x", fmt.sig(r["max_abs_diff"], 2)]
     for k, r in bench["pagerank"].items()])))

# %% [markdown]
# ## The CViT classifier at fewer tokens
#
# Images per second of the {term}`CViT` classifier keeping 100%, 50% and 22% of the 49 patch tokens, measured in one interleaved
# run, beside the ratio of whole-forward FLOPs: the speed-up that counting FLOPs predicts. A
# measured speed-up can exceed it, when the shorter sequence's activations fit the caches better.

# %% tags=["remove-input"]
if "cvit" in bench:
    c = bench["cvit"]
    display(Markdown(
        f"`{c['profile']}` profile's ViT ({c['depth']} blocks of width {c['width']}), "
        f"{c['images']} images\n\n"
        + markdown_table(["keep", "tokens", "images/s", "speed-up vs 100%", "FLOP ratio"],
                         [[fmt.share(float(r), 0), k["tokens"], fmt.num(k["images_per_s"], 0),
                           f"{fmt.num(k['speedup'], 2)}x", f"{fmt.num(k['flop_ratio'], 2)}x"]
                          for r, k in c["keep"].items()])))
else:
    display(Markdown("This bench file predates the CViT section: run `make bench`."))

# %% [markdown]
# ## The exact Gaussian model of Chapter 1
#
# On the CPU in float64, as Chapter 1 runs it.

# %% tags=["remove-input"]
g = bench["gaussian_entropy"]
display(Markdown(f"Fit to 60,000 images: {fmt.num(g['fit_60000_s'], 2)} s; greedy order: "
                 f"{fmt.num(g['greedy_order_s'], 2)} s; prefix curves: "
                 f"{fmt.num(g['prefix_curves_per_s'], 1)} per second."))

# %% [markdown]
# ## The book's own run times, per profile
#
# `tools/run_chapters.py` records the minutes each chapter took, with the device and machine, in
# `runtimes-<profile>.json` beside the results files; every profile that has been run is shown (the
# `smoke` times from `make test`'s run in `.scratch/book/results/` where the book holds none). The
# introduction, the README and the report state the same numbers from the same files
# (`copkit.results.read_runtimes`; `tools/runtimes_text.py` writes them into the Markdown pages). A
# chapter that found its trained runs in `data/runs/` only loaded them, so the `cpu` file keeps the
# times of a run from the shipped base models with nothing cached.

# %% tags=["remove-input"]
# the first folder's file wins for a profile
runtimes = read_runtimes(results_dir, smoke_results_dir)
if runtimes:
    missing = [p for p in ("smoke", "cpu", "gpu") if p not in runtimes]
    hosts = "; ".join(
        f"`{p}`: {runtimes_hosts({k: v for k, v in c.items() if k not in RUNTIME_READERS})}"
        for p, c in runtimes.items())
    display(Markdown(
        runtimes_table(runtimes) + "\n\nThis page and the report take seconds; they read this "
        "file before their own time is recorded in it, so the table leaves them out. Measured "
        f"on {hosts}."
        + (f" Not measured yet: {fmt.listing(f'`{p}`' for p in missing)}." if missing else "")))
else:
    display(Markdown(f"No `runtimes-<profile>.json` in `{results_dir}` yet: execute the chapters "
                     "with `tools/run_chapters.py` (`make chapters`), which records them."))
