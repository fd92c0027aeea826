# %% [markdown]
# # 6. Reproducibility report
#
# *Source:* [`chapters/06_report.py`](../chapters/06_report.py), a jupytext script: open it in JupyterLab as a
# notebook, or run it with `python tools/run_chapters.py 06_report --profile smoke` (into `.scratch/book/smoke/`).
#
# Every claim of the paper that a chapter tested, with its verdict and the {term}`effect` we measured.
# Nothing here is typed by hand: this page reads the results files the chapters wrote
# (`book/results/<chapter>.json`), and how each verdict is reached is set out at the end.

# %% [markdown]
# ```{glue:md} findings
# :format: myst
# ```

# %% tags=["parameters"]
profile = "cpu"  # the profile the other chapters ran with (only printed here)
results_dir = "../book/results"  # where the chapters wrote their results files
notebooks_dir = "../book"  # where the executed chapters are (for their run times)

# %% tags=["remove-input"]
import importlib.metadata as md
import json
import platform
import time
from pathlib import Path

import torch
from IPython.display import Markdown, display

from copkit import fmt
from copkit.findings import (
    VERDICT_LABELS,
    claim_counts,
    claim_format,
    claim_name,
    effect_cell,
    effect_text,
    findings_box,
    glue_box,
    key_claims,
    ours_text,
    verdict_parts,
)
from copkit.results import (
    RUNTIME_READERS,
    VERDICTS,
    base_model_numbers,
    book_results,
    commit_text,
    effect_scale,
    family_size,
    git_commit,
    markdown_table,
    read_results,
    read_runtimes,
    readable,
    run_flags,
    section_labels,
    test_text,
)

started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
raw_results = read_results(results_dir)
if not raw_results:
    raise FileNotFoundError(f"no results files in {Path(results_dir).resolve()}: execute the chapters first "
                            "(make chapters, or make book)")
# The verdicts over the whole book, from every chapter's tests together (a chapter decided its own
# against the other chapters' files as they were when it ran; where one of those changed since,
# the verdict here is the one that counts, and the tables mark the difference). The introduction's
# box reads the same (tools/findings_text.py).
results, ran_with = book_results(raw_results)
TITLES = {"01_entropy": "1. Patch entropy", "02_comae": "2. CoMAE", "03_rank": "3. Patch ranking",
          "04_cmar": "4. CMAR", "05_cvit": "5. CViT", "06_report": "6. Report", "07_performance": "7. Performance"}
labels = {chapter: section_labels(Path(notebooks_dir) / f"{chapter}.ipynb") for chapter in results}


def shown_in(chapter: str, c: dict) -> str:
    """A link to the section that shows a claim; the chapter when the claim names none, or when the
    executed chapter predates the label (results written by an older run)."""
    if c.get("section") in labels[chapter]:
        return f"{{ref}}`{c['section']}`"
    return f"[{TITLES.get(chapter, chapter)}]({chapter}.ipynb)"


# %% [markdown]
# (report-headlines)=
# ## The paper's headline claims
#
# The claims the chapters mark as the ones that matter most, where the paper fails first: the
# verdict, the claim, then the effect we measured with its {term}`95% interval`, and the section that
# shows it.

# %% tags=["remove-input"]
lines = []
for chapter, cid, c in key_claims(results, headline_only=True):
    effect = effect_text(cid, c.get("test"))
    detail = verdict_parts(c)[1]
    lines.append(f"- **{VERDICT_LABELS.get(c['verdict'], c['verdict'])}.** {claim_name(cid)}"
                 + (f": {detail}" if detail else "") + (f"; {effect}" if effect else "")
                 + f" (Chapter {int(chapter[:2])}, {shown_in(chapter, c)})."
                 + ("" if effect else f" {c['why']}")
                 + (f" The chapter, run before the others changed, had: {ran_with[chapter, cid]}." if (chapter, cid) in ran_with
                    else ""))
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## How the claims came out, by chapter
#
# Each claim counted once: a claim that repeats another's test (an {term}`alias`) is counted with it.

# %% tags=["remove-input"]
counts = {ch: claim_counts(r["claims"].values()) for ch, r in results.items()}
shown = [v for v in dict.fromkeys([*VERDICTS, *(v for c in counts.values() for v in c)])
         if any(c.get(v) for c in counts.values())]
total = {v: sum(c.get(v, 0) for c in counts.values()) for v in shown}
display(Markdown(
    markdown_table(["chapter", *shown, "claims"],
                   [[f"[{TITLES.get(ch, ch)}]({ch}.ipynb)", *(c.get(v, 0) for v in shown), sum(c.values())]
                    for ch, c in counts.items()]
                   + [["**all**", *(f"**{total[v]}**" for v in shown), f"**{sum(total.values())}**"]],
                   css_class="dense-table")))

# %% [markdown]
# (report-every-claim)=
# ## Every claim
#
# Chapter by chapter: the claim, its verdict, the effect its test measured with the 95% interval,
# the section that shows it and what we measured; the line under each claim gives the paper's
# number, says why the verdict, with its test, and ends with the claim's id in the results file.

# %% tags=["remove-input"]
def verdict_cell(chapter: str, cid: str, c: dict) -> str:
    """The verdict in bold, and the chapter's own where the book's differs."""
    text = f"**{VERDICT_LABELS.get(c['verdict'], c['verdict'])}**"
    if (chapter, cid) in ran_with:
        text += f" (the chapter, run before: {ran_with[chapter, cid]})"
    return text


def why_cell(cid: str, c: dict) -> str:
    """The paper's number, the claim's reason with its test (or the claim it repeats), its id;
    an FID's test to one decimal."""
    t = c.get("test")
    digits = 1 if claim_format(cid).is_fid else 2
    how = ("" if t is None else f" (the same test as: {claim_name(t['alias_of'])})"
           if t.get("alias_of") else f" ({test_text(t, digits)})")
    return f"The paper: {readable(c['paper'])}. {c['why']}{how} Id: `{cid}`."


def claims_table(chapter: str, r: dict) -> str:
    """One chapter's claims: claim, verdict, effect (95% interval), shown in, ours, and the
    line under them (a claims-table)."""
    rows = [[claim_name(cid), verdict_cell(chapter, cid, c), effect_cell(cid, c.get("test")),
             shown_in(chapter, c), ours_text(cid, c["ours"]), why_cell(cid, c)]
            for cid, c in r["claims"].items()]
    return markdown_table(["claim", "verdict", "effect (95% interval)", "shown in", "ours", "why"],
                          rows, css_class="claims-table")


for chapter, r in results.items():
    display(Markdown(
        f"### {TITLES.get(chapter, chapter)}\n\nProfile `{r['profile']}` on `{r['device']}`, "
        f"seeds {', '.join(map(str, r['seeds']))}, commit {commit_text(r['commit'], code=True)}; "
        f"[the chapter]({chapter}.ipynb) shows every number below with its figure.\n\n"
        + claims_table(chapter, r)))

# %% [markdown]
# (report-tests)=
# ## The tests, and what they could detect
#
# Every tested claim: the paper's effect in our units where it states one, ours with its 95%
# interval, the test, the raw and the {term}`Holm`-adjusted p, and the smallest effect the test could
# detect with 80% {term}`power` at the level Holm asks of the strongest claim.

# %% tags=["remove-input"]
def tests_rows(results: dict) -> list[list[str]]:
    """One row per tested claim (aliases left out), each number in its claim's units and
    decimals (FIDs to one decimal: copkit.findings.ClaimName.show)."""
    rows = []
    for chapter, r in results.items():
        for cid, c in r["claims"].items():
            t = c.get("test")
            if t is None or t.get("alias_of"):
                continue
            entry, scale = claim_format(cid), effect_scale(t)
            lo, hi = t["ci"] or (None, None)
            mde = t.get("mde_family")
            n = (f"{' + '.join(map(str, t['n']))} {t['unit']}" if isinstance(t["n"], list)
                 else fmt.counted(t["n"], t["unit"]))
            rows.append([
                claim_name(cid), entry.show(t.get("paper_effect"), unit=False),
                entry.show(t["effect"], relative_to=scale),
                fmt.MISSING if lo is None or hi is None
                else f"[{entry.show(lo, unit=False, relative_to=scale)}, "
                     f"{entry.show(hi, unit=False, relative_to=scale)}]",
                f"{t['test']} ({n})", fmt.pvalue(t["p"]), fmt.pvalue(t["p_holm"]),
                entry.show(mde, unit=False, relative_to=scale).lstrip("+"),
                verdict_cell(chapter, cid, c)])
    return rows


def tests_table(results: dict) -> str:
    """The tests table, and what the family and the detectable effects say."""
    raw = [(c["test"].get("paper_effect"), c["test"].get("mde_family"))
           for r in results.values() for c in r["claims"].values()
           if c.get("test") and not c["test"].get("alias_of")]
    n_seen = sum(1 for paper, mde in raw
                 if paper is not None and mde is not None and abs(paper) >= mde)
    n_paper = sum(1 for paper, mde in raw if paper is not None and mde is not None)
    header = ["claim", "paper's effect", "ours", "95% interval", "test", "p", "Holm p",
              "detectable (80%)", "verdict"]
    return (markdown_table(header, tests_rows(results), css_class="dense-table")
            + f"\n\n{family_size(results) or 0} tested claims form the family; of the {n_paper} "
              "whose paper states an effect in our units and whose test has a standard error, "
              f"the paper's effect is at least the detectable one for {n_seen}: for the others "
              "an inconclusive verdict says that our seeds are too few to see an effect of the "
              "paper's size, not that it is absent.")


display(Markdown(tests_table(results)))

# %% [markdown]
# (report-base-models)=
# ## The base models
#
# The chapters fine-tune and evaluate from base models trained once (`make pretrain`, from
# `copkit/configs/pretrain.yaml`) and shipped in `data/pretrained/`, each with its configuration
# hash, training log and final numbers. The table is `pretrained.json`, which `make pretrain`
# writes from the shipped files; the targets are the book's, set before training.

# %% tags=["remove-input"]
pretrained_file = Path(results_dir) / "pretrained.json"
if pretrained_file.exists():
    base_models = json.loads(pretrained_file.read_text())["models"]

    display(Markdown(markdown_table(
        ["model", "command", "file (hash)", "steps", "epochs", "training time", "final numbers"],
        [[name, f"`{m['command']}`", f"`{m['file']}`", fmt.count(m['steps']), fmt.sig(m['epochs'], 2),
          fmt.duration(m['train_seconds']),
          base_model_numbers(name, m["metrics"])]
         for name, m in base_models.items()], css_class="dense-table")
        + f"\n\nTogether {fmt.num(sum(m['train_seconds'] for m in base_models.values()) / 3600, 1)} hours of training time "
          f"(summed over the models and their resumed sessions; each model's machine and threads are in its `.json`), "
          "against the book's budget of 8 CPU-hours."))
else:
    display(Markdown(f"No `{pretrained_file.name}` beside the results files: run `make pretrain`, which trains "
                     "(or finds) the base models and writes it."))

# %% [markdown]
# (report-method)=
# ## How a verdict is reached
#
# :::{admonition} The tests, the correction for many claims, and the verdicts (`copkit.stats`, `copkit.results`)
# :class: dropdown
#
# - A claim that rests on {term}`seeds <seed>` or samples is tested once: a {term}`paired t-test` where one trained
#   model (or one seed's fine-tunes of the same base) is measured two ways, {term}`Welch's t-test <Welch>`
#   where the two sides are independent trainings, a {term}`one-sample t-test` against the paper's number,
#   or an {term}`equivalence test` where the claim is that two numbers are equal within a stated margin.
#   Each test gives an effect in the claim's units with a 95% interval (over seeds or over test
#   images, whichever the replicates are; the table says which).
# - All tested claims of the book form one family. Their {term}`p-values <p-value>` are adjusted together with
#   Holm's step-down correction, which keeps the chance of *any* false verdict in the book under 5%.
# - **reproduced**: the effect has the paper's direction (or lies within the margin) and its
#   Holm-adjusted p is below 0.05. **not reproduced**: the opposite, equally significant.
#   **inconclusive**: anything else; a sign that is not significant decides nothing.
#   **partly**: only where the chapter stated a weaker criterion with the claim before measuring
#   (e.g. "within 3 points") and the claim's whole 95% interval meets it.
#   **negligible**: where the chapter stated with a directional claim the smallest effect that
#   would matter, and the claim's whole 95% interval lies inside it; it does not support the paper.
# - A claim that two statements of the paper make with one comparison is counted once (an
#   alias). Claims decided by an exact computation (an identity checked to rounding, a FLOP
#   count, a counterexample) carry no test; claims this scale cannot test say so.
# - Beside each test: the smallest true effect it could have detected with 80% power at the level
#   Holm asks of the strongest claim (0.05 divided by the number of tested claims), from its own
#   standard error, next to the paper's effect in the same units. Where the paper's effect is
#   smaller, our seeds could not have seen it, and "inconclusive" means exactly that.
#
# Our numbers come from Fashion-MNIST at the profile named beside them; the paper's from
# ImageNet. Where scales differ, only directions and orders of magnitude compare.
# :::

# %% [markdown]
# ## Status: when and how each chapter ran
#
# When each page was executed, from papermill's metadata in the executed notebooks; how long each
# chapter takes, from `runtimes-<profile>.json` (the run from the shipped base models with nothing
# cached, the minutes the introduction and the performance chapter state; a later re-execution
# that found its trained runs in `data/runs/` takes less); and the environment this page runs in.

# %% tags=["remove-input"]
runtimes = read_runtimes(results_dir)
pages = {nb_path.stem: json.loads(nb_path.read_text()).get("metadata", {}).get("papermill", {})
         for nb_path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))}
commit = git_commit()
flags = run_flags(results, commit, started, {ch: pm.get("end_time") for ch, pm in pages.items()})
rows = []
for stem, pm in pages.items():
    nb_path = Path(notebooks_dir) / f"{stem}.ipynb"
    r = results.get(nb_path.stem, {})
    ran = pm.get("parameters", {}).get("profile", r.get("profile", profile))  # a page without one: the book's
    seconds = None if nb_path.stem in RUNTIME_READERS else runtimes.get(ran, {}).get(nb_path.stem, {}).get("seconds")
    rows.append([TITLES.get(nb_path.stem, nb_path.stem),
                 "this page" if nb_path.stem == "06_report"  # its notebook on disk is the previous run's
                 else str(pm["end_time"])[:16].replace("T", " ") if pm.get("end_time") else fmt.MISSING,
                 f"`{ran}`" if ran else fmt.MISSING, f"`{r['device']}`" if r.get("device") else fmt.MISSING,
                 fmt.minutes(seconds), commit_text(r["commit"], code=True) if r.get("commit") else fmt.MISSING,
                 "; ".join(flags.get(nb_path.stem, [])) or ("none" if nb_path.stem in flags else fmt.MISSING)])
flagged = [TITLES.get(ch, ch) for ch, f in flags.items() if f]
display(Markdown(markdown_table(["chapter", "executed (UTC)", "profile", "device", "minutes", "commit", "flagged"], rows,
                                css_class="dense-table")
                 + f"\n\nThis page ran at commit {commit_text(commit, code=True)}. "
                 + (f"**Flagged**: {fmt.listing(flagged)}, which ran at another commit or from uncommitted changes, "
                    "after this page started, or "
                    "in another run than the page the site shows (the column says which); the numbers above are their "
                    "results files' as this page read them." if flagged else "No chapter is flagged: each ran at this page's commit, before it, "
                    "in the run whose page the site shows.")
                 + "\n\nThis report and the performance chapter write no results file (no device or commit of their "
                   "own), and take seconds: they read the runtimes file before their own time is recorded in it, so "
                   "no page shows their minutes."))
versions = {k: md.version(k) for k in ("torch", "timm", "torchmetrics", "kneed", "numpy", "scipy")}
display(Markdown(f"Environment of this page: Python {platform.python_version()}, "
                 + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
                 + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU") + "."))

# %% tags=["remove-cell"]
# The report's "What we found" box (copkit.findings, the one the introduction shows), glued for the
# top of the page.
glue_box(findings_box(results, labels=set().union(*labels.values())))
