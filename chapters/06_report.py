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
# # 6. Reproducibility report
#
# *Source:* [`chapters/06_report.py`](../chapters/06_report.py), a jupytext script: open it in JupyterLab as a
# notebook, or run it with `python tools/run_chapters.py 06_report --profile smoke`.
#
# Every claim of the paper that a chapter tested, with the paper's number, ours, and a verdict.
# Nothing here is typed by hand: this page reads the results files the chapters wrote
# (`book/results/<chapter>.json`, one per chapter, each naming the profile, the device and the
# commit that produced it) and the run times papermill recorded in the executed notebooks.
#
# Verdicts: **reproduced** (the effect is there, in the paper's direction, beyond the spread over
# seeds), **partly** (the direction holds but not significantly, or only part of the claim
# holds), **not reproduced** (the opposite, or no effect), **not testable** (the paper leaves it
# open, or it needs what this scale cannot give). Our numbers come from Fashion-MNIST at the
# profile named beside them; the paper's from ImageNet. Where scales differ, only directions
# and orders of magnitude compare.

# %% tags=["parameters"]
profile = "cpu"  # the profile the other chapters ran with (only printed here)
results_dir = "../book/results"  # where the chapters wrote their results files
notebooks_dir = "../book"  # where the executed chapters are (for their run times)

# %%
import json
import platform
import re
from collections import Counter
from pathlib import Path

import torch
from IPython.display import Markdown, display

from copkit.results import VERDICTS

results = {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("[0-9][0-9]_*.json"))}
if not results:
    raise FileNotFoundError(f"no results files in {Path(results_dir).resolve()}: execute the chapters first "
                            "(make chapters, or make book)")
TITLES = {"01_entropy": "1. Patch entropy", "02_comae": "2. CoMAE", "03_rank": "3. Patch ranking",
          "04_cmar": "4. CMAR", "05_cvit": "5. CViT"}


def fmt(value, depth: int = 0) -> str:
    """A results value in a few characters: mean ± sd (n) for a summary, short for the rest."""
    if isinstance(value, dict) and {"mean", "std", "n"} <= set(value):
        return f"{value['mean']:.4g} ± {value['std']:.2g} (n={value['n']})"
    if isinstance(value, dict):
        items = list(value.items())
        text = "; ".join(f"{k}: {fmt(v, depth + 1)}" for k, v in items[:4])
        return text + ("; …" if len(items) > 4 else "")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v, depth + 1) for v in value[:4]) + (", …" if len(value) > 4 else "") + "]"
    return str(value).replace("|", "/")


# %% [markdown]
# ## Every claim

# %% tags=["full-width"]
def labels_in(chapter: str) -> set[str]:
    """The section labels, ``(label)=``, of an executed chapter's markdown cells (none if it is missing)."""
    path = Path(notebooks_dir) / f"{chapter}.ipynb"
    if not path.exists():
        return set()
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return set(re.findall(r"^\(([^)\s]+)\)=\s*$", text, flags=re.M))


def shown_in(chapter: str, c: dict, labels: set[str]) -> str:
    """A link to the section that shows a claim; the chapter when the claim names none, or when the
    executed chapter predates the label (results written by an older run)."""
    if c.get("section") in labels:
        return f"{{ref}}`{c['section']}`"
    return f"[{TITLES.get(chapter, chapter)}]({chapter}.ipynb)"


counts = Counter()
for chapter, r in results.items():
    title = TITLES.get(chapter, chapter)
    labels = labels_in(chapter)
    rows = []
    for cid, c in r["claims"].items():
        counts[c["verdict"]] += 1
        rows.append(f"| `{cid}` | {fmt(c['paper'])} | {fmt(c['ours'])} | **{c['verdict']}** | {c['why'].replace('|', '/')} | "
                    f"{shown_in(chapter, c, labels)} |")
    display(Markdown(
        f"### {title}\n\nProfile `{r['profile']}` on `{r['device']}`, seeds {r['seeds']}, commit `{r['commit'][:12]}`; "
        f"[the chapter]({chapter}.ipynb) shows every number below with its figure, and the last column links "
        "the section that shows each one.\n\n"
        "| claim | paper | ours | verdict | why | shown in |\n|---|---|---|---|---|---|\n" + "\n".join(rows)))

# %% [markdown]
# ## In one line

# %%
total = sum(counts.values())
display(Markdown(f"{total} claims tested: " + ", ".join(f"**{counts[v]}** {v}" for v in VERDICTS) + "."))

# %% [markdown]
# ## Status: when and how each chapter ran
#
# From papermill's metadata in the executed notebooks, and the environment this page runs in.

# %%
rows = []
for nb_path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
    nb = json.loads(nb_path.read_text())
    pm = nb.get("metadata", {}).get("papermill", {})
    params = pm.get("parameters", {})
    r = results.get(nb_path.stem, {})
    rows.append(f"| {TITLES.get(nb_path.stem, nb_path.stem)} | {str(pm.get('end_time', '?'))[:19].replace('T', ' ')} | "
                f"`{params.get('profile', r.get('profile', '?'))}` | `{r.get('device', '?')}` | "
                f"{(pm.get('duration') or 0) / 60:.1f} | `{r.get('commit', '?')[:12]}` |")
display(Markdown("| chapter | executed (UTC) | profile | device | minutes | commit |\n|---|---|---|---|---|---|\n"
                 + "\n".join(rows)))
import importlib.metadata as md

versions = {k: md.version(k) for k in ("torch", "timm", "torchmetrics", "kneed", "numpy", "scipy")}
display(Markdown(f"Environment of this page: Python {platform.python_version()}, "
                 + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
                 + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU") + "."))
