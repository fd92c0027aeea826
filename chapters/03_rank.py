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
# # 3. From masks to a collapse order: PageRank, and the proof checked with numbers
#
# *Source:* [`chapters/03_rank.py`](../chapters/03_rank.py), a jupytext script: open it in JupyterLab as a
# notebook, or run it with `python tools/run_chapters.py 03_rank --profile smoke` (into `.scratch/book/smoke/`).
#
# {term}`CoMAE` (Chapter 2) gives, for every {term}`patch` $i$ of an image, a mask $w_i$: how much $i$ relies on
# each other patch. Stacked, the masks form a weighted directed graph $A_{ij} = w_{ij}$. The paper
# ranks the patches with {term}`PageRank` {cite}`page1999pagerank` on that graph (Sec. 3.2): a patch many others rely on is
# realised first. The resulting **{term}`collapse order`** drives {term}`CMAR` and {term}`CViT` in the next chapters.
#
# Sec. 6 of the paper argues that this order is optimal. This chapter
#
# 1. checks every step of that argument numerically (Eq. 11-15), on CoMAE's graphs and on random
#    ones;
# 2. tests the *conclusion* against an exact ground truth, the {term}`Gaussian token model <Gaussian model>`
#    of Chapter 1, where the best order is computable, and measures how far the argument's
#    assumptions hold;
# 3. measures the paper's "directed acyclic graph" remark;
# 4. draws the orders and quantifies what the paper only shows: consistency within a class, and
#    how much of the top of the order falls on the object.
#
# **Direction convention** (the paper does not spell it out; this is our reading): patch $i$ links to the
# patches it relies on, so score flows from $i$ to them. The transition matrix is the
# row-normalised $A$ transposed, $P = (D^{-1}A)^\top$ (column-stochastic), and PageRank solves
# $r = (1-c)\beta + cPr$ with damping $c = 0.85$ and uniform teleport $\beta$. A patch whose row
# is all zero (it relies on nothing) sends its score to $\beta$, as networkx does. A unit test
# pins the convention: if every patch relies only on patch $k$, $k$ ranks first.

# %% [markdown]
# ```{glue:md} findings
# :format: myst
# ```

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | gpu: the sizes, see copkit.profiles
device = "auto"  # auto | cpu | cuda
seed = 0  # the seed offset Chapter 2 ran with, and of the random draws here
results_dir = "../book/results"  # where this chapter's results file goes
data_dir = "../data"  # where Chapter 2 saved the CoMAE

# %% tags=["hide-input"]
from copkit.profiles import chapter_setup

# first: it also quiets the warning that importing timm would print
book = chapter_setup(profile, device, seed, data_dir, results_dir)
import time

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import torch
from IPython.display import Markdown, display
from scipy.stats import kendalltau, spearmanr

from copkit import fmt, pretrained, stats, viz
from copkit.comae import logit_variance_split
from copkit.data import CLASSES, load_fashion_mnist
from copkit.entropy import GaussianTokens, curve_area
from copkit.orders import dataset_orders
from copkit.rank import (
    TIE_RTOL,
    collapse_order,
    order_diversity,
    pagerank,
    ranks,
    same_order,
    transition,
)
from copkit.results import (
    claim,
    decide,
    exact_verdict,
    in_words,
    markdown_table,
    mean_sd,
    summary,
    test_text,
    tested,
    write_results,
)
from copkit.tokens import GRID, PATCH, object_patches, patchify, random_orders

PROFILE, R, dev = book.profile, book.profile.rank, book.device
comae, comae_hash = pretrained.base(PROFILE, "comae", data_dir, dev)
print(f"profile={PROFILE.name}; device={dev}; "
      f"the shipped CoMAE {comae_hash[:8]} (make pretrain)")

# %% [markdown]
# ## The graphs
#
# The masks of every target of the first test images, computed in one batched pass
# (`CoMAE.masks`: all $N$ targets of a chunk of images at once, diagonal set to 0).

# %%
test_x, test_y = load_fashion_mnist("test", limit=R.images)
tokens = patchify(test_x, PATCH)
t0 = time.perf_counter()
masks = comae.masks(tokens.to(dev)).cpu().double()
mask_seconds = time.perf_counter() - t0
N = masks.shape[-1]
orders = collapse_order(masks)
print(f"{fmt.count(R.images)} images: masks {tuple(masks.shape)} in "
      f"{fmt.duration(mask_seconds)}, orders {tuple(orders.shape)}")

g = torch.Generator().manual_seed(seed)
random_graphs = torch.rand(R.random_graphs, N, N, generator=g, dtype=torch.float64)
random_graphs.diagonal(dim1=1, dim2=2).zero_()

i0 = int((test_y == 9).nonzero()[0])  # an ankle boot, drawn below
boot_scores = pagerank(masks[i0]).scores

# %% tags=["remove-input"] mystnb={"figure": {"caption": "One CoMAE mask graph: an ankle boot, its 49 x 49 matrix of mask values $A_{ij} = w_{ij}$, and the PageRank score of each patch drawn over the image.", "name": "fig-ch3-graph"}, "image": {"alt": "Left: an ankle boot; middle: a square heat map of mask values; right: the boot tinted by the PageRank score of each patch."}}
fig, axes = plt.subplots(1, 3, figsize=(viz.COLUMN_IN, 2.5), layout="constrained",
                         width_ratios=[1, 1.25, 1.25])
viz.show_image(test_x[i0], axes[0], CLASSES[int(test_y[i0])])
im = axes[1].imshow(masks[i0], cmap="viridis", vmin=0, vmax=1)
axes[1].set_xlabel("patch j (relied on)")
axes[1].set_ylabel("target i")
axes[1].set_title("$A_{ij} = w_{ij}$", fontsize=9)
fig.colorbar(im, ax=axes[1], fraction=0.046, label="mask value")
viz.token_map(boot_scores, (GRID, GRID), axes[2], image=test_x[i0],
              cmap="magma", alpha=0.7, colorbar="score", title="PageRank score")
plt.show()

# %% tags=["remove-input"]
a0 = masks[i0][~torch.eye(N, dtype=torch.bool)].reshape(N, N - 1)
col_means = masks[i0].sum(0) / (N - 1)  # how much the targets rely on each patch j
row_means = masks[i0].sum(1) / (N - 1)  # how much each target i relies on patches overall
col_share = float(((col_means - a0.mean()) ** 2).mean() / a0.var())
row_share = float(((row_means - a0.mean()) ** 2).mean() / a0.var())
display(Markdown(
    "What to see: the matrix is striped by column, not by row. The patch relied on decides a mask "
    "value more than the target does: "
    + fmt.compare("the share of the variance of $A$ that its column means explain", col_share,
                  "the share its row means explain", row_share, words=("larger than", "smaller than"))
    + "." if col_share > row_share else
    "What to see: "
    + fmt.compare("the share of the variance of $A$ that its column means (the patch relied on) explain", col_share,
                  "the share its row means (the target) explain", row_share, words=("larger than", "smaller than"))
    + "."))

# %% [markdown]
# (ch3-proof)=
# ## The proof, step by step
#
# With $\tilde P$ the transition matrix whose dangling columns are replaced by $\beta$, the
# argument of Sec. 6 goes:
#
# - Eq. 11: $r = \sum_{t\ge0} c^t \tilde P^t \beta$ (a Neumann series) equals $(I - c\tilde P)^{-1}\beta$;
# - Eq. 12-14: the series satisfies the fixed point $r = \beta + c\tilde P r$;
# - Eq. 15: $(1-c)\,r$ is the PageRank vector, so ranking by $r$ is ranking by PageRank, and
#   scaling $\beta$ scales $r$ without changing the order.
#
# Each step, measured on the CoMAE graphs and on random graphs of the same size:


# %%
def proof_checks(a: torch.Tensor, c: float = 0.85, terms: int = 120) -> dict:
    """Each step of Sec. 6 measured on the graphs ``a`` (B, N, N)."""
    p, dangling = transition(a)
    beta = torch.full(a.shape[:2], 1.0 / a.shape[-1], dtype=a.dtype)
    pt = p + beta.unsqueeze(-1) * dangling.unsqueeze(-2).to(a.dtype)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    # (I - cP)^-1 beta
    exact = torch.linalg.solve(eye - c * pt, beta.unsqueeze(-1)).squeeze(-1)
    partial, term, errors = torch.zeros_like(beta), beta.clone(), []
    for _ in range(terms):
        partial = partial + term
        term = c * torch.einsum("bij,bj->bi", pt, term)
        relative_error = (partial - exact).abs().sum(-1) / exact.abs().sum(-1)
        errors.append(float(relative_error.max()))
    one_step = beta + c * torch.einsum("bij,bj->bi", pt, exact)
    fixed_point = float((exact - one_step).abs().max())
    power = pagerank(a, damping=c, tol=1e-13).scores
    eq15 = float(((1 - c) * exact - power).abs().max())
    scaled = torch.linalg.solve(eye - c * pt, 10 * beta.unsqueeze(-1)).squeeze(-1)
    scaled_ranking = torch.sort(-scaled, stable=True).indices
    exact_ranking = torch.sort(-exact, stable=True).indices
    # the same order, patches whose scores tie (copkit.rank.TIE_RTOL) in either order
    unchanged = same_order(exact, scaled)
    # ... and as a stable sort puts them, ties broken by rounding
    stable = (scaled_ranking == exact_ranking).all(-1)
    return {"errors": errors, "fixed_point_residual": fixed_point,
            "eq15_max_abs_diff": eq15,
            "order_unchanged_by_10x_beta": float(unchanged.double().mean()),
            "stable_sort_unchanged_by_10x_beta": float(stable.double().mean())}


PROOF_TOL = 1e-4  # an identity holds when it holds to this: far above float64 rounding
checks = {"CoMAE graphs": proof_checks(masks),
          "random graphs": proof_checks(random_graphs)}
nx_diff = 0.0
for a in masks[:20]:
    # edge i -> j with weight A_ij
    gnx = nx.from_numpy_array(a.numpy(), create_using=nx.DiGraph)
    ref = nx.pagerank(gnx, alpha=0.85, tol=1e-13, max_iter=10000)
    copkit_scores = pagerank(a, tol=1e-13).scores.numpy()
    networkx_scores = np.array([ref[i] for i in range(N)])
    nx_diff = max(nx_diff, float(np.abs(copkit_scores - networkx_scores).max()))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Eq. 11 checked: the relative error of the Neumann series' partial sums against the exact solve $(I - c\\tilde P)^{-1}\\beta$ (worst graph), beside $c^T$.", "name": "fig-ch3-neumann"}, "image": {"alt": "Log-scale plot of the error against the number of terms: the curves for CoMAE and random graphs fall along the c to the T reference line down to machine precision."}}
fig, ax = plt.subplots(figsize=(5.2, 3.3))
for name, ch in checks.items():
    ax.semilogy(np.arange(1, len(ch["errors"]) + 1), np.maximum(ch["errors"], 1e-17),
                label=name)
ax.semilogy(np.arange(1, 121), 0.85 ** np.arange(1, 121), "k:", label="$c^T$")
ax.set_xlabel("terms T of the Neumann series")
ax.set_ylabel("relative L1 error (worst graph)")
ax.set_title("Eq. 11: partial sums converge to $(I - c\\tilde P)^{-1}\\beta$",
             fontsize=9)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% tags=["remove-input"]
tie = fmt.sig(TIE_RTOL, 1)
rows = [[label, *(show(checks[graphs][key]) for graphs in ("CoMAE graphs", "random graphs"))]
        for key, label, show in (
            ("fixed_point_residual", "Eq. 14 residual, max over graphs", fmt.sig),
            ("eq15_max_abs_diff", "Eq. 15: $(1-c)r$ vs power-iteration PageRank, max abs diff",
             fmt.sig),
            ("order_unchanged_by_10x_beta", "graphs whose order is unchanged when $\\beta$ is "
             f"scaled 10x (scores within {tie} of the top score tie)", fmt.share),
            ("stable_sort_unchanged_by_10x_beta", "... the same, as a stable sort breaks ties",
             fmt.share))]
rows.append(["PageRank vs `networkx.pagerank`, 20 CoMAE graphs, max abs diff", fmt.sig(nx_diff),
             ""])
largest = max(nx_diff, *(max(ch["fixed_point_residual"], ch["eq15_max_abs_diff"])
                         for ch in checks.values()))
kept = min(ch["order_unchanged_by_10x_beta"] for ch in checks.values())
display(Markdown(
    markdown_table(["check", "CoMAE graphs", "random graphs"], rows)
    + f"\n\nWhat to see: the largest residual or difference is {fmt.sig(largest)}, "
    + ("within" if largest < PROOF_TOL else "beyond")
    + f" the {fmt.sig(PROOF_TOL, 1)} an identity may miss by, and scaling $\\beta$ keeps "
    + ("every graph's order, ties aside" if kept == 1.0 else
       f"the order of only {fmt.share(kept)} of the graphs of one kind, ties aside")
    + (": the argument's *derivation* is sound." if largest < PROOF_TOL and kept == 1.0
       else ".")))

# %% [markdown]
# The order cannot depend on the teleport's scale, but it may depend on the damping and on the teleport's
# shape; how much it does on these graphs is Kendall's $\tau$ against the default order, mean over
# the CoMAE graphs (1: the same order). The last row drops PageRank altogether and orders the
# patches by the column mean of $A$, how much the other targets rely on each patch: where its
# $\tau$ is close to 1, the walk adds little beyond this one step on these graphs.

# %%
rows_cols = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
rc = torch.stack(rows_cols, -1).reshape(-1, 2)
centre = torch.exp(-((rc - 3.0) ** 2).sum(-1) / 8.0)
variants = {"damping 0.5": dict(damping=0.5), "damping 0.99": dict(damping=0.99),
            "teleport towards the centre": dict(teleport=centre)}
sensitivity = {}
for name, kw in variants.items():
    other = collapse_order(masks, **kw)
    taus = [kendalltau(ranks(orders[b]).numpy(), ranks(other[b]).numpy()).statistic
            for b in range(min(200, len(masks)))]
    sensitivity[name] = summary(taus)
# Does PageRank add anything beyond in-degree on these graphs? The order by each
# patch's column mean of A (how much the other targets rely on it, one step of the
# walk), against PageRank's.
in_degree = torch.sort(-masks.mean(-2), dim=-1, stable=True).indices
sensitivity["no PageRank: order by the column mean of A"] = summary(
    [kendalltau(ranks(orders[b]).numpy(), ranks(in_degree[b]).numpy()).statistic
     for b in range(min(200, len(masks)))])

# %% tags=["remove-input"]
display(Markdown(markdown_table(["change", "Kendall τ vs default order"],
                                [[k, mean_sd(v, 3)] for k, v in sensitivity.items()])))

# %% [markdown]
# (ch3-optimality)=
# ## Is the order optimal? A test against exact ground truth
#
# The theorem's conclusion rests on two assumptions: that the marginal {term}`entropy` reduction of
# observing patch $j$ is proportional to $j$'s PageRank score (Assumption 1), and that the
# collapse entropy is monotone and approximately submodular (Assumption 2). On the Gaussian token
# model of Chapter 1 everything is exact, so the conclusion can be tested directly:
#
# - the **exact influence graph**: $A^*_{ij} = H(e_i) - H(e_i \mid e_j)$, the information patch
#   $j$ gives about patch $i$ (the mutual information), computed exactly;
# - orders compared by the area under their {term}`prefix curve` $H_c(S_k)$ (Chapter 1; lower is better):
#   PageRank on the exact influence graph, PageRank on the mean CoMAE graph, CoMAE's per-image
#   orders, the {term}`greedy order` (a strong reference, computed exactly), raster, random, and the
#   *ascending* orders (lowest score first).
#
# We report each order's **gap**: its area minus the greedy area, divided by the random mean's
# area minus the greedy area (0 = as good as greedy, 1 = as good as random).

# %%
train_x, _ = load_fashion_mnist("train", limit=PROFILE.entropy.fit_images)
gauss = GaussianTokens.fit(patchify(train_x, PATCH))
h0 = gauss.marginal_entropies()
# [j, i] = H(e_i | e_j)
given = gauss.conditional_entropy(torch.eye(N, dtype=torch.bool))
influence = (h0.unsqueeze(0) - given).T.clone()  # [i, j] = I(e_i; e_j)
influence.fill_diagonal_(0.0)
exact_order = collapse_order(influence)
mean_order = collapse_order(masks.mean(0))
greedy = gauss.greedy_order()
candidates = {
    "greedy (exact, step by step)": greedy,
    "PageRank, exact influence graph": exact_order,
    "PageRank, mean CoMAE graph": mean_order,
    "raster": torch.arange(N),
    "PageRank ascending, exact influence": exact_order.flip(0),
    "PageRank ascending, mean CoMAE graph": mean_order.flip(0),
}
curves = {k: gauss.prefix_curve(o) for k, o in candidates.items()}
areas = {k: curve_area(c).item() for k, c in curves.items()}
rand_curves = gauss.prefix_curve(random_orders(R.random_orders, N, seed=seed))
rand_area = summary(curve_area(rand_curves).numpy())
per_image = curve_area(gauss.prefix_curve(orders[: min(len(orders), 500)]))
per_image_area = summary(per_image.numpy())
g_area = areas["greedy (exact, step by step)"]


def gap(a: float) -> float:
    """An order's area as a share of the way from greedy (0) to the random mean (1)."""
    return (a - g_area) / (rand_area["mean"] - g_area)


# %% tags=["remove-input"]
rows = [[k, fmt.num(a, 1), fmt.num(gap(a), 2)] for k, a in sorted(
    {**areas, "random (mean)": rand_area["mean"],
     "CoMAE per-image orders (mean)": per_image_area["mean"]}.items(),
    key=lambda kv: kv[1])]
display(Markdown(
    markdown_table(["order", "area (nats)", "gap (0 greedy, 1 random)"], rows)
    + f"\n\nrandom: {fmt.count(rand_area['n'])} orders, sd {fmt.num(rand_area['std'], 1)}; "
    f"CoMAE per-image: {fmt.count(per_image_area['n'])} test images, "
    f"sd {fmt.num(per_image_area['std'], 1)}."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Prefix curves on the exact Gaussian model of Chapter 1: the greedy order, PageRank on the exact influence graph and on the mean CoMAE graph, raster, ascending PageRank and random orders.", "name": "fig-ch3-optimality"}, "image": {"alt": "Line plot of the entropy left against the fraction of patches observed; the greedy order and PageRank on the exact influence graph lie lowest, the ascending order highest."}}
fig, ax = plt.subplots(figsize=(viz.COLUMN_IN, 3.8), layout="constrained")
orders_drawn = ["greedy (exact, step by step)", "PageRank, exact influence graph",
                "PageRank, mean CoMAE graph", "raster",
                "PageRank ascending, exact influence"]
viz.prefix_curves({"random": rand_curves, **{k: curves[k] for k in orders_drawn}}, ax)
ax.set_title("Prefix curves on the exact Gaussian model", fontsize=10)
plt.show()

# %% tags=["remove-input"]
display(Markdown(
    "What to see: how close each PageRank order comes to the greedy one. "
    + fmt.compare("PageRank on the exact influence graph", areas["PageRank, exact influence graph"],
                  "PageRank on the mean CoMAE graph", areas["PageRank, mean CoMAE graph"],
                  lambda v: f"area {fmt.num(v, 1)} nats, gap {fmt.num(gap(v), 2)}", better="lower")
    + " (greedy is at gap 0, the mean of the random orders at gap 1)."))

# %% [markdown]
# (ch3-assumptions)=
# ### Where the assumptions break
#
# **Assumption 2** (monotone, approximately submodular). For random observed sets $S \subset T$
# and a patch $j \notin T$, the marginal gain is $\Delta(j \mid S) = H_c(S) - H_c(S \cup \{j\})$.
# Submodularity says gains shrink as more is observed: $\Delta(j\mid T) \le \Delta(j\mid S)$; we
# count how often the gain *grows*, and how often a gain is negative (observing a patch *raises*
# the remaining entropy, which a monotone $H_c$ forbids).
#
# A negative gain has a simple cause here: $H_c$ sums only over *unobserved* patches, so observing
# $j$ removes $j$'s own term $H(e_j \mid e_S)$ from the sum. A patch that is nearly certain
# already (the black background, whose differential entropy is very negative) therefore *raises*
# $H_c$ when observed, while the information part, $\sum_{m} [H(e_m\mid e_S) - H(e_m \mid e_{S\cup
# j})]$, can never be negative (conditioning does not increase entropy). Monotonicity fails for
# differential entropies of near-deterministic patches, not for the information they carry.
#
# **Assumption 1** (gain proportional to the PageRank score). For the observed sets along the
# greedy order, the {term}`Spearman correlation` between the exact gains $\Delta(j \mid S)$ of the
# unobserved patches and their exact-influence PageRank scores.

# %%
rng = np.random.default_rng(seed)
masks_s, masks_sj, masks_t, masks_tj = [], [], [], []
for _ in range(R.submodularity_triples):
    perm = rng.permutation(N)
    s_size = int(rng.integers(0, N - 2))
    t_size = int(rng.integers(s_size + 1, N - 1))
    j = perm[-1]
    for store, members in ((masks_s, perm[:s_size]),
                           (masks_sj, np.r_[perm[:s_size], j]),
                           (masks_t, perm[:t_size]),
                           (masks_tj, np.r_[perm[:t_size], j])):
        m = torch.zeros(N, dtype=torch.bool)
        m[torch.as_tensor(members, dtype=torch.long)] = True
        store.append(m)
hc = {k: torch.cat([gauss.collapse_entropy(torch.stack(v[i:i + 64]))
                    for i in range(0, len(v), 64)])
      for k, v in (("S", masks_s), ("Sj", masks_sj), ("T", masks_t), ("Tj", masks_tj))}
gain_s, gain_t = hc["S"] - hc["Sj"], hc["T"] - hc["Tj"]
violation_rate = float((gain_t > gain_s + 1e-9).double().mean())
negative_rate = float((torch.cat([gain_s, gain_t]) < -1e-9).double().mean())
scores_exact = pagerank(influence).scores
assumption1 = {}
for k in (0, 5, 10, 20):
    observed = torch.zeros(N, dtype=torch.bool)
    observed[greedy[:k]] = True
    free = torch.nonzero(~observed).squeeze(1)
    trial = observed.repeat(len(free), 1)
    trial[torch.arange(len(free)), free] = True
    gains = gauss.collapse_entropy(observed) - gauss.collapse_entropy(trial)
    correlation = spearmanr(gains.numpy(), scores_exact[free].numpy())
    assumption1[k] = float(correlation.statistic)
print(f"{fmt.count(R.submodularity_triples)} triples: the gain grows with the observed "
      f"set (not submodular) in {fmt.share(violation_rate)},")
print(f"a gain is negative (not monotone) in {fmt.share(negative_rate)}")
print("Assumption 1, Spearman(exact gain, PageRank score) after k greedy patches:")
print(", ".join(f"k={k}: {fmt.num(v, 2)}" for k, v in assumption1.items()))

# %% [markdown]
# (ch3-dag)=
# ## The "directed acyclic graph"
#
# The paper calls the mask graph a directed acyclic graph. CoMAE's masks are dense, so at any
# threshold that keeps edges, patches rely on each other both ways. For thresholds $\theta$ we
# count the mutual edges ($A_{ij} > \theta$ and $A_{ji} > \theta$) among all edges above $\theta$,
# and the share of graphs that are acyclic once edges below $\theta$ are dropped (networkx).

# %%
dag = {}
off = ~torch.eye(N, dtype=torch.bool)
for theta in (0.5, 0.7, 0.9):
    e = masks > theta
    mutual = (e & e.transpose(1, 2) & off).sum((1, 2)).double()
    edges = (e & off).sum((1, 2)).double().clamp_min(1)
    graphs = [nx.from_numpy_array((e[b] & off).numpy().astype(float),
                                  create_using=nx.DiGraph)
              for b in range(min(200, len(masks)))]
    acyclic = np.mean([nx.is_directed_acyclic_graph(graph) for graph in graphs])
    dag[theta] = {"mutual_share": float((mutual / edges).mean()),
                  "edges_per_graph": float(edges.mean()),
                  "acyclic_share": float(acyclic)}

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["threshold", "edges per graph", "share of edges that are mutual",
     "share of graphs acyclic"],
    [[t, fmt.num(v["edges_per_graph"], 0), fmt.share(v["mutual_share"], 0),
      fmt.share(v["acyclic_share"])] for t, v in dag.items()])))

# %% [markdown]
# (ch3-fig4)=
# ## Collapse orders, drawn (paper Fig. 4)
#
# Circles are larger the earlier a patch comes; the first 22% (11 of 49) patches are joined in
# order, the first marked by a square. First Fashion-MNIST, then natural images: a CoMAE of the
# same size, shipped with the base models (`make pretrain`), trained on random 28 x 28 crops of
# scikit-image's photos, ranking crops it has not seen.

# %% mystnb={"figure": {"caption": "Our analogue of paper Fig. 4: the collapse order of one test image per class. Circles are larger the earlier a patch comes; the first 11 patches (22%) are joined in order, the first marked by a square.", "name": "fig-ch3-fig4"}, "image": {"alt": "Ten clothing images, one per class, each with circles on its patches and a line joining the first eleven."}}
fig, axes = viz.panel_grid(2, 5)
shown = [int((test_y == c).nonzero()[0]) for c in range(10)]
for c, ax in enumerate(axes.flat):
    viz.draw_collapse(test_x[shown[c]], orders[shown[c]], (GRID, GRID), top=11, ax=ax,
                      title=CLASSES[c])
plt.show()


# %% tags=["remove-input"]

def shown_orders_text(o: torch.Tensor, what: str, top: int = 11) -> str:
    """How alike the drawn orders are: their first patches, and the top patches all of them share."""
    firsts = torch.unique(o[:, 0])
    common = set(o[0, :top].tolist()).intersection(*(set(r[:top].tolist()) for r in o[1:]))
    return (f"What to see: the {len(o)} {what} start at {fmt.count(len(firsts))} distinct "
            f"patch{'es' if len(firsts) > 1 else ''}, and {fmt.count(len(common))} of their first {top} patches "
            f"are the same in all {len(o)}.")


display(Markdown(shown_orders_text(orders[shown], "orders drawn, one per class,")))

# %%
photo_comae, photo_hash = pretrained.base(PROFILE, "comae_photo", data_dir, dev)
# its held-out crops (another seed than its training)
photo_plan = pretrained.plan("comae_photo", PROFILE.pretrain)
print(f"the shipped photo CoMAE {photo_hash[:8]}, trained on "
      f"{fmt.count(photo_plan.tag['crops'])} crops of")
print(", ".join(photo_plan.tag["photos"]))

# %% mystnb={"figure": {"caption": "Collapse orders of ten held-out photo crops, from a CoMAE trained on crops of scikit-image's photos.", "name": "fig-ch3-photo-orders"}, "image": {"alt": "Ten grey crops of photographs, each with circles and a line marking the first eleven patches of its order."}}
held_out = photo_plan.test[0][:10]
photo_masks = photo_comae.masks(patchify(held_out, PATCH).to(dev)).cpu().double()
photo_orders = collapse_order(photo_masks)
fig, axes = viz.panel_grid(2, 5, title_lines=0)
for k, ax in enumerate(axes.flat):
    viz.draw_collapse(held_out[k], photo_orders[k], (GRID, GRID), top=11, ax=ax)
plt.show()

# %% tags=["remove-input"]
display(Markdown(shown_orders_text(photo_orders, "photo crops' orders")))

# %% [markdown]
# Whether photo crops get orders of their own is measured the same way as for Fashion-MNIST below
# (`copkit.rank.order_diversity`), over every held-out crop, with the photo a crop comes from as
# its class:

# %%
photo_test = photo_plan.test[0]
photo_masks_all = photo_comae.masks(patchify(photo_test, PATCH).to(dev)).cpu().double()
photo_all = collapse_order(photo_masks_all)
# the held-out crops are 200 per photo, in the config's order; the test part starts at
# crop 512
photo_of = (512 + torch.arange(len(photo_test))) // 200
photo_diversity = order_diversity(photo_all, photo_of, keep=0.22)

# %% tags=["remove-input"]
display(Markdown(markdown_table(["measure, over the held-out photo crops", "value"], [
    ["crops", fmt.count(len(photo_test))],
    ["distinct first patches (of 49)", fmt.count(int(photo_diversity["distinct_first"]))],
    ["distinct sets of the top 22% patches", fmt.count(int(photo_diversity["distinct_top"]))],
    ["share of a crop's top 22% the best fixed order also puts first",
     fmt.share(photo_diversity["fixed_overlap"])],
    ["footrule between two crops' orders, same photo", fmt.num(photo_diversity["footrule_within"], 3)],
    ["... different photos", fmt.num(photo_diversity["footrule_across"], 3)]])
    + "\n\nWhat to see: the photo CoMAE's orders are " + (
        "nearly one fixed order for every crop" if photo_diversity["fixed_overlap"] >= 0.8 else
        "partly shared between crops" if photo_diversity["fixed_overlap"] >= 0.5 else
        "mostly the crop's own")
    + f" ({fmt.share(photo_diversity['fixed_overlap'], 0)} of a crop's top 22% is what one fixed "
    "order puts first)."))

# %% [markdown]
# How to read these: paper Fig. 4 shows orders that start on the object. Whether ours do
# is measured below (the share of the first 22% on the object, and how many orders start on the
# background). How much an order *can* differ between images is bounded by how much the masks do:

# %%
shares = logit_variance_split(comae, tokens[:256].to(dev))

# %% tags=["remove-input"]
display(Markdown(
    "Of the variance of this CoMAE's selector logits over "
    f"{fmt.count(min(256, len(tokens)))} test images, their targets and positions, "
    f"{fmt.share(shares['position'], 0)} is the position alone, "
    f"{fmt.share(shares['targetxposition'], 0)} the target and position together "
    f"(one fixed set of masks for every image), and {fmt.share(shares['image_specific'], 0)} "
    "involves the image (the split is defined in [Chapter 2](02_comae.ipynb), "
    "section *Diagnostics*): the orders inherit "
    + ("mostly the shared part." if shares["image_specific"] < 0.5
       else "mostly the image-specific part.")))

# %% [markdown]
#
# (ch3-fig5)=
# ## Class-wise orders (paper Fig. 5), and what the paper only eyeballs
#
# For each class: how often each patch (rows, raster index) lands at each position of the order
# (columns, first on the left), over the class's images.

# %%
# per class: how many of its images put each patch (rows) at each position (columns)
position_counts = torch.zeros(10, N, N)
for c in range(10):
    oc = orders[test_y == c]
    position_counts[c].index_put_((oc.reshape(-1), torch.arange(N).repeat(len(oc))),
                                  torch.ones(oc.numel()), accumulate=True)
class_sizes = torch.bincount(test_y, minlength=10).clamp_min(1)
position_share = position_counts / class_sizes[:, None, None]
# per class: (the most common first patch, the share of the class's images it starts)
first_share = [(int(position_share[c, :, 0].argmax()),
                float(position_share[c, :, 0].max())) for c in range(10)]

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Our analogue of paper Fig. 5: for each class, how often each patch (rows, raster index) lands at each position of the collapse order (columns, first on the left); the colour is the share of the class's images, brightest from one half up.", "name": "fig-ch3-fig5"}, "image": {"alt": "Ten heat maps, one per class, of patch index against position in the order; bright cells mark patches that often come at that position."}}
fig, axes = viz.panel_grid(2, 5, colorbar=True, sharex=True, sharey=True)
for c, ax in enumerate(axes.flat):
    ax.imshow(position_share[c], cmap="magma", aspect="auto", vmin=0, vmax=0.5)
    ax.set_title(f"{CLASSES[c]} ({int((test_y == c).sum())})", fontsize=9)
fig.supxlabel("position in the collapse order", fontsize=10)
fig.supylabel("patch index", fontsize=10)
viz.shared_colorbar(fig, axes, "share of the images")
plt.show()

# %% tags=["remove-input"]
top_first = max({p for p, _ in first_share}, key=[p for p, _ in first_share].count)
display(Markdown(
    f"What to see: whether the classes follow one order. In "
    f"{fmt.count(sum(p == top_first for p, _ in first_share))} of 10 classes the most common first patch is patch "
    f"{top_first}; a class's most common first patch starts "
    f"{fmt.between(min(v for _, v in first_share), max(v for _, v in first_share), lambda x: fmt.share(x, 0))} "
    "of its images."))

# %%
pos = ranks(orders).numpy()
same_pairs, diff_pairs = [], []  # image pairs of one class and of different classes
labels = test_y.numpy()
while len(same_pairs) < R.kendall_pairs or len(diff_pairs) < R.kendall_pairs:
    a, b = rng.integers(0, len(labels), 2)
    if a == b:
        continue
    bucket = same_pairs if labels[a] == labels[b] else diff_pairs
    if len(bucket) < R.kendall_pairs:
        bucket.append((a, b))
same = [kendalltau(pos[a], pos[b]).statistic for a, b in same_pairs]
diff = [kendalltau(pos[a], pos[b]).statistic for a, b in diff_pairs]
tau_same, tau_diff = summary(same), summary(diff)
# The control for class consistency: is an image's order closer to its own class's mean
# order (the image itself left out) than to the population's mean order? An order that
# ignores the image, or one shared by every image, is as close to both, whatever tau
# between two images says.
totals = np.zeros((10, N))
np.add.at(totals, labels, pos)
counts_c = np.bincount(labels, minlength=10)[:, None]
# leave-one-out
class_mean = (totals[labels] - pos) / np.maximum(counts_c[labels] - 1, 1)
global_mean = (pos.sum(0) - pos) / (len(pos) - 1)
tau_class = np.array([kendalltau(pos[i], class_mean[i]).statistic
                      for i in range(len(pos))])
tau_global = np.array([kendalltau(pos[i], global_mean[i]).statistic
                       for i in range(len(pos))])
# class-specificity (ours, not the paper's claim): the same image two ways
t_class = stats.paired(tau_class, tau_global, unit="test images")

top = 11
obj = object_patches(test_x)  # a patch holding any pixel brighter than 10% grey
top_share = obj.gather(1, orders[:, :top]).double().mean(1)
asc_share = obj.gather(1, orders.flip(1)[:, :top]).double().mean(1)
base_share = obj.double().mean(1)  # what a random order's top 22% holds on average
first_background = float((~obj.gather(1, orders[:, :1])).double().mean())

# %% tags=["remove-input"]
def as_percent(values: torch.Tensor) -> str:
    """Shares of the images' patches, mean ± sd, in percent."""
    return mean_sd(100 * values.numpy(), 1)


display(Markdown(markdown_table(["measure", "value"], [
    ["Kendall τ between orders of two images of the same class",
     f"{mean_sd(tau_same, 3)} ({fmt.count(tau_same['n'])} pairs)"],
    ["... of different classes",
     f"{mean_sd(tau_diff, 3)} ({fmt.count(tau_diff['n'])} pairs)"],
    ["Kendall τ between an image's order and its class's mean order",
     mean_sd(tau_class, 3)],
    ["... and the mean order of all images", mean_sd(tau_global, 3)],
    ["share of the top 22% patches on the object (%), collapse order",
     as_percent(top_share)],
    ["... ascending order (lowest score first)", as_percent(asc_share)],
    ["... a random order (the image's object share)", as_percent(base_share)],
    ["images whose collapse order starts on a background patch",
     fmt.share(first_background)]])))

# %% [markdown]
# **Do the orders depend on the image?** The paper's chain needs each image's own order. Four
# measures say how far these orders are from one fixed order for every image
# (`copkit.rank.order_diversity`): how many distinct first patches and distinct sets of the top
# 22% there are, how much of an image's top 22% the best single order (the patches sorted by their
# mean place) also puts first, and the Spearman footrule between two images' orders (0: the same
# order, 1: as different as two random orders), within and across classes.

# %%
diversity = order_diversity(orders, test_y, keep=0.22)

# %% tags=["remove-input"]
display(Markdown(markdown_table(["measure, over the test images ranked here", "value"], [
    ["images", fmt.count(int(diversity["images"]))],
    ["distinct first patches (of 49)", fmt.count(int(diversity["distinct_first"]))],
    ["distinct sets of the top 22% patches", fmt.count(int(diversity["distinct_top"]))],
    ["share of an image's top 22% the best fixed order also puts first",
     fmt.share(diversity["fixed_overlap"])],
    ["footrule between two images' orders, same class", fmt.num(diversity["footrule_within"], 3)],
    ["... different classes", fmt.num(diversity["footrule_across"], 3)],
    ["share of the selector's logit variance that involves the image",
     fmt.share(shares["image_specific"])]])
    + "\n\n" + ("What to see: these orders are " + (
        "nearly one fixed order for every image" if diversity["fixed_overlap"] >= 0.8 else
        "partly shared between images" if diversity["fixed_overlap"] >= 0.5 else
        "mostly the image's own")
        + f": {fmt.share(diversity['fixed_overlap'], 0)} of an image's top 22% is what one fixed "
        f"order puts first, and two images' orders are {fmt.num(diversity['footrule'], 2)} apart "
        "on the footrule's scale from 0 (the same order) to 1 (random orders).")))

# %% [markdown]
# (ch3-trainings)=
# ### Over CoMAE trainings
#
# Everything above comes from one CoMAE. A claim about collapse orders is a claim about what
# CoMAE training produces, and what varies from one training to the next is its {term}`seed`, so the
# unit of replication is the training, not the test image: thousands of images ranked by one
# CoMAE are one draw. The book ships replicate CoMAEs, the same configuration trained from other
# seeds (`make pretrain`: `comae_s1`, `comae_s2`). Each ranks the same test images, and gives one
# value per claim: how much more of its top 22% lies on the object than a random order's
# (paper Fig. 4), and the mean Kendall $\tau$ between the orders of two images of different
# classes, over the same pairs of images (paper Fig. 5).

# %%
replicate_names = pretrained.replicates("comae", PROFILE.pretrain)


def order_effects(model) -> dict:
    """One CoMAE's values for the claims about orders, on this chapter's test images."""
    if model is comae:
        o = orders
    else:
        o = collapse_order(model.masks(tokens.to(dev)).cpu().double())
    p = ranks(o).numpy()
    on_object = obj.gather(1, o[:, :top]).double().mean(1)
    taus = [kendalltau(p[a], p[b]).statistic for a, b in diff_pairs]
    return {"top22_minus_random": float((on_object - base_share).mean()),
            "tau_across_classes": float(np.mean(taus)),
            "fixed_overlap": order_diversity(o, test_y, keep=0.22)["fixed_overlap"]}


per_training = {name: order_effects(comae if name == "comae"
                                    else pretrained.load(name, dev, PROFILE.pretrain,
                                                         book.data_dir / "pretrained"))
                for name in replicate_names}

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["CoMAE", "top 22% on the object minus a random order's (points)",
     "Kendall τ, different classes",
     "share of the top 22% the best fixed order puts first"],
    [[f"`{name}`", fmt.signed(100 * v["top22_minus_random"], 1),
      fmt.num(v["tau_across_classes"], 3),
      fmt.share(v["fixed_overlap"])] for name, v in per_training.items()])))

# %% [markdown]
# ### Over the whole data set
#
# `make orders` ranks every Fashion-MNIST image with this same CoMAE, once, into the orders file
# shipped beside it (`data/pretrained/orders-<hash8>.npz`; Chapters 4 and 5 train on it). The same
# measures over all of its images, training and test:

# %%
all_train, all_test, _ = dataset_orders(PROFILE, data_dir, dev,
                                        n_train=R.dataset_images,
                                        n_test=R.dataset_images)
all_orders = torch.cat([all_train, all_test])
all_x = torch.cat([load_fashion_mnist("train", limit=len(all_train))[0],
                   load_fashion_mnist("test", limit=len(all_test))[0]])
all_obj = object_patches(all_x)
del all_x
overlap = min(len(all_test), len(orders))
starts_on_background = ~all_obj.gather(1, all_orders[:, :1])
equal_to_ours = (all_test[:overlap] == orders[:overlap]).all(1)
whole = {
    "images": len(all_orders),
    "distinct_orders": len(torch.unique(all_orders, dim=0)),
    "distinct_first_patches": len(torch.unique(all_orders[:, 0])),
    "top22_on_object": float(all_obj.gather(1, all_orders[:, :top]).double().mean()),
    "random_expectation": float(all_obj.double().mean()),
    "first_patch_on_background": float(starts_on_background.double().mean()),
    "same_as_this_chapter": float(equal_to_ours.double().mean()),
}

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["measure, over every image of the orders file", "value"],
    [["images (training + test)", fmt.count(whole["images"])],
     ["distinct orders", fmt.count(whole["distinct_orders"])],
     ["distinct first patches (of 49)", fmt.count(whole["distinct_first_patches"])],
     ["share of the top 22% patches on the object, collapse order",
      fmt.share(whole["top22_on_object"])],
     ["... a random order (the images' object share)",
      fmt.share(whole["random_expectation"])],
     ["orders that start on a background patch",
      fmt.share(whole["first_patch_on_background"])],
     [f"test orders equal to this chapter's own ({fmt.count(overlap)} images)",
      fmt.share(whole["same_as_this_chapter"])]])))

# %% [markdown]
# ## What this chapter found

# %% tags=["remove-input"]
gap_exact = gap(areas["PageRank, exact influence graph"])
gap_comae = gap(areas["PageRank, mean CoMAE graph"])
gap_image = gap(per_image_area["mean"])
worst_fp = max(ch["fixed_point_residual"] for ch in checks.values())
worst_15 = max(ch["eq15_max_abs_diff"] for ch in checks.values())
unchanged = {k: v["order_unchanged_by_10x_beta"] for k, v in checks.items()}
stable_unchanged = {k: v["stable_sort_unchanged_by_10x_beta"] for k, v in checks.items()}
acyclic = dag[0.5]["acyclic_share"]

# The criteria of the exact claims, each stated in its claim's sentence; exact_verdict reads
# the verdict off the numbers against them.
Partial = stats.Partial
GAP = {"reproduced_below": 0.1, "partly_below": 0.5}  # gap 0 greedy, 1 random
SUBMODULAR = {"reproduced_below": 0.05, "partly_below": 0.25}  # shares of the triples
GAIN = {"reproduced_above_at_every_step": 0.7, "partly_above_at_one": 0.3}  # Spearman
ACYCLIC_PARTLY = 0.5  # share of the graphs acyclic above 0.5
verdicts = {
    "derivation": exact_verdict(
        (Partial.ci_beyond(PROOF_TOL, "lower", "every identity holds to the tolerance"),
         largest)),  # the proof table's largest residual or difference
    "beta": exact_verdict(
        (Partial.ci_within(1.0, 1.0, "every graph keeps its order, ties aside"),
         kept)),  # the proof table's smallest share of orders kept
    "theorem": exact_verdict(
        (Partial.ci_beyond(GAP["reproduced_below"], "lower"), gap_exact),
        (Partial.ci_beyond(GAP["partly_below"], "lower"), gap_exact)),
    "submodular": exact_verdict(
        # violations and negative gains each below the line; violations alone
        (Partial.ci_beyond(SUBMODULAR["reproduced_below"], "lower"),
         max(violation_rate, negative_rate)),
        (Partial.ci_beyond(SUBMODULAR["partly_below"], "lower"), violation_rate)),
    "gain": exact_verdict(
        # the correlation at every step (the lowest), at one step (the highest)
        (Partial.ci_beyond(GAIN["reproduced_above_at_every_step"], "higher"),
         min(assumption1.values())),
        (Partial.ci_beyond(GAIN["partly_above_at_one"], "higher"), max(assumption1.values()))),
    "dag": exact_verdict(
        (Partial.ci_within(1.0, 1.0, "every graph acyclic"), acyclic),
        (Partial.ci_within(ACYCLIC_PARTLY, 1.0, "at least half of the graphs acyclic"), acyclic)),
}


def training_test(key: str):
    """The test over CoMAE trainings (one value each, against 0) when there are at least 3."""
    values = [v[key] for v in per_training.values()]
    return stats.one_sample(values, 0.0, unit="CoMAE trainings") if len(values) >= 3 else None


def over_trainings(key: str, show) -> str:
    """The sentence saying what the verdict rests on, each training's value written by show."""
    values = [v[key] for v in per_training.values()]
    if len(values) < 3:
        return (("One CoMAE ranks" if len(values) == 1 else
                 f"Only {fmt.count(len(values))} CoMAEs rank")
                + " these images, so the verdict rests on the test images of one training.")
    return (f"The test is over {fmt.count(len(values))} CoMAE trainings (seeds), one value "
            "each: " + ", ".join(show(v) for v in values) + ".")


def both_graphs(values: dict) -> str:
    """Shares for the CoMAE and the random graphs, in words."""
    return (f"{fmt.share(values['CoMAE graphs'])} of CoMAE and "
            f"{fmt.share(values['random graphs'])} of random graphs")


claims = {
    "eq11-15.derivation": claim(
        "the Neumann series, fixed point and PageRank identities of Sec. 6",
        {"eq14_residual": worst_fp, "eq15_max_abs_diff": worst_15, "networkx_max_abs_diff": nx_diff,
         "comae_graphs": R.images, "random_graphs": R.random_graphs,
         "neumann_error_after_120_terms": max(ch["errors"][-1] for ch in checks.values()),
         "criterion": {"reproduced_below": PROOF_TOL}},
        verdicts["derivation"],
        f"On {fmt.count(R.images)} CoMAE and {fmt.count(R.random_graphs)} random graphs the "
        f"identities hold to {fmt.sig(max(worst_fp, worst_15))}, and PageRank matches networkx to "
        f"{fmt.sig(nx_diff)} (reproduced when all hold to {fmt.sig(PROOF_TOL, 1)}).",
        section="ch3-proof", exact=True),
    "sec6.order_invariant_to_beta_scale": claim(
        "scaling beta does not change the order",
        {**unchanged, "stable_sort": stable_unchanged, "beta_scale": 10, "tie_rtol": TIE_RTOL,
         "criterion": {"reproduced_at": 1.0}},
        verdicts["beta"],
        f"Scaling the teleport by 10 left the order of {both_graphs(unchanged)} unchanged, "
        f"patches whose scores differ by less than {fmt.sig(TIE_RTOL, 1)} of the top score "
        f"counted as tied (reproduced when every graph keeps its order); a stable sort, which "
        f"breaks such ties by rounding, keeps that of {both_graphs(stable_unchanged)}. Against "
        "the default order, Kendall's tau is "
        + ", ".join(f"{fmt.num(v['mean'], 3)} for {k}" for k, v in sensitivity.items()
                    if k in variants) + ".",
        section="ch3-proof", exact=True),
    "theorem.pagerank_area_vs_greedy": claim(
        "ordering by PageRank minimises the collapse entropy",
        {"gap_exact_influence": gap_exact, "gap_mean_comae_graph": gap_comae,
         "gap_comae_per_image_mean": gap_image, "area_greedy": g_area, "area_random": rand_area,
         "criterion": GAP},
        verdicts["theorem"],
        "On the exact Gaussian model, PageRank on the exact influence graph closes "
        f"{fmt.share(1 - gap_exact, 0)} of the gap between random and greedy orders (gap "
        f"{fmt.num(gap_exact, 2)}); the mean CoMAE graph's order has gap {fmt.num(gap_comae, 2)} "
        f"(reproduced below a gap of {fmt.num(GAP['reproduced_below'], 1)}, partly below "
        f"{fmt.num(GAP['partly_below'], 1)}).",
        section="ch3-optimality", headline=True, exact=True),
    "assumption2.submodularity": claim(
        "H_c is monotone and approximately submodular",
        {"violation_rate": violation_rate, "negative_gain_rate": negative_rate,
         "triples": R.submodularity_triples, "criterion": SUBMODULAR},
        verdicts["submodular"],
        f"Gains grew with the observed set in {fmt.share(violation_rate)} of random triples ("
        + ("nearly submodular" if violation_rate < SUBMODULAR["reproduced_below"]
           else "not submodular")
        + f") and were negative in {fmt.share(negative_rate, 0)} ("
        + ("not monotone: observing a near-certain patch removes its negative entropy from H_c"
           if negative_rate >= SUBMODULAR["reproduced_below"] else "nearly monotone")
        + "); each violation is an exact counterexample on the Gaussian model (reproduced below "
        f"{fmt.share(SUBMODULAR['reproduced_below'], 0)} of each, partly below "
        f"{fmt.share(SUBMODULAR['partly_below'], 0)} violations).",
        section="ch3-assumptions", exact=True),
    "assumption1.gain_tracks_pagerank": claim(
        "the marginal gain of a patch is proportional to its PageRank score",
        {**{f"spearman_after_{k}": v for k, v in assumption1.items()},
         "greedy_patches_observed": list(assumption1), "criterion": GAIN},
        verdicts["gain"],
        "Spearman correlation between exact gains and exact-influence PageRank scores: "
        + ", ".join(f"{fmt.num(v, 2)} after {k}" for k, v in assumption1.items())
        + " greedy patches (reproduced above "
        f"{fmt.num(GAIN['reproduced_above_at_every_step'], 1)} at every step, partly above "
        f"{fmt.num(GAIN['partly_above_at_one'], 1)} at one).",
        section="ch3-assumptions", exact=True),
    "dag.acyclic": claim(
        "the mask graph is a directed acyclic graph",
        {**{str(t): v for t, v in dag.items()}, "criterion": {"partly_at_least": ACYCLIC_PARTLY}},
        verdicts["dag"],
        f"Above 0.5, {fmt.share(dag[0.5]['mutual_share'], 0)} of the edges are mutual and "
        f"{fmt.share(acyclic)} of graphs are acyclic (each cyclic graph is a counterexample; "
        f"reproduced when all are acyclic, partly when at least "
        f"{fmt.share(ACYCLIC_PARTLY, 0)} are).",
        section="ch3-dag", exact=True),
    "fig5.common_structure": tested(
        "collapse orders of different classes are moderately similar: they share a common structure",
        {"tau_different_class_pairs": tau_diff, "tau_same_class_pairs": tau_same,
         "per_training": {n: v["tau_across_classes"] for n, v in per_training.items()},
         "class_specificity": {**summary(tau_class - tau_global),
                               "tau_to_class_mean": summary(tau_class),
                               "tau_to_population_mean": summary(tau_global),
                               "test": stats.claim_row(t_class, expect="higher",
                                                       smallest=0.05)}},
        # is the Kendall tau of two images of different classes above 0? One value per CoMAE training
        # when there are replicates, else (one training) per pair of test images
        training_test("tau_across_classes") or stats.one_sample(np.asarray(diff), 0.0, unit="image pairs"),
        "higher",
        smallest=0.05,  # 0.05 of Kendall tau would matter
        why=f"Two images of different classes have orders with Kendall tau "
        f"{fmt.num(tau_diff['mean'], 3)} ({fmt.count(tau_diff['n'])} pairs; same class: "
        f"{fmt.num(tau_same['mean'], 3)}). Class-specificity, which the paper does not claim, is "
        f"measured apart: an image's order has tau {fmt.num(tau_class.mean(), 3)} with its "
        f"class's mean order and {fmt.num(tau_global.mean(), 3)} with that of all images "
        f"({test_text(t_class)}). "
        + over_trainings("tau_across_classes", lambda v: fmt.num(v, 3)),
        section="ch3-fig5"),
    "fig4.top22_on_object": tested("the top of the collapse order falls on the object",
        {"collapse": summary(top_share.numpy()), "ascending": summary(asc_share.numpy()), "random": summary(base_share.numpy()),
         "first_patch_on_background": first_background, "top_patches": top, "top_share_of_patches": top / N,
         "every_image_of_the_orders_file": whole,
         "per_training": {n: v["top22_minus_random"] for n, v in per_training.items()}},
        # one value per CoMAE training when there are replicates; with one training, the same image two
        # ways: the collapse order's top 22%, and what a random order's top 22% holds on average on that
        # image (exactly its share of object patches)
        training_test("top22_minus_random")
        or stats.paired(top_share.numpy(), base_share.numpy(), unit="test images"), "higher",
        smallest=0.05,  # 5 points of object share would matter
        why=f"{fmt.share(top_share.mean(), 0)} of the top 22% patches are on the object, against "
        f"{fmt.share(base_share.mean(), 0)} expected of a random order on the same images and "
        f"{fmt.share(asc_share.mean(), 0)} for the ascending order; "
        f"{fmt.share(first_background, 0)} of the orders start on the background, where a random "
        f"first patch would be on it for {fmt.share(1 - base_share.mean(), 0)}. "
        + over_trainings("top22_minus_random", lambda v: fmt.signed(100 * v, 1) + " points"),
        section="ch3-fig4", headline=True),
}
claims = decide(claims, "03_rank", results_dir)
metrics = {"images": R.images, "masks_seconds": mask_seconds, "logit_variance_shares": shares,
           "sensitivity_kendall": sensitivity, "order_diversity": diversity,
           "photo_order_diversity": photo_diversity, "per_training": per_training,
           "areas_nats": areas, "random_area_nats": rand_area,
           "comae_per_image_area_nats": per_image_area, "runtime_s": book.seconds()}
path = write_results(results_dir, "03_rank", profile=PROFILE.name, device=str(dev), seeds=[seed],
                     claims=claims, metrics=metrics)
display(Markdown(in_words(claims) + f"\n\nProfile `{PROFILE.name}`, {fmt.count(R.images)} test "
                 f"images; the chapter ran in {fmt.duration(book.seconds())}; results in "
                 f"`{path.name}`."))

# %% [markdown]
# ## Exercises
#
# **1. The damping.** Add `"damping 0.2": dict(damping=0.2)` to `variants` in the sensitivity
# cell. Where does its Kendall $\tau$ land, and which row of that table should it approach?
#
# :::{dropdown} Solution
# With a small damping $c$ the series of Eq. 11 is dominated by its first two terms,
# $r \approx \beta + c\tilde P\beta$, and $\tilde P\beta$ scores each patch by how much the other
# patches rely on it, each target's row normalised to sum to 1. That is one step of the walk, close
# to the last row of the table (the order by the column mean of $A$). The two differ only by
# that normalisation. So expect the $\tau$ of damping 0.2 to lie between those of damping 0.5 and
# of the column-mean order. It will be closer to the column mean the more alike the rows' sums
# are. We have not run it.
# :::
#
# **2. A stricter graph.** Add 0.95 to the thresholds of the DAG cell. Can the share of acyclic
# graphs go down as $\theta$ rises?
#
# :::{dropdown} Solution
# No. Raising $\theta$ only removes edges, and removing edges from a graph cannot create a cycle,
# so every graph that was acyclic at 0.9 is still acyclic at 0.95. The share can only stay the
# same or rise. The share of mutual edges has no such rule: it can move either way.
# :::
#
# **3. The top of the order.** Set `top = 5` in the cell that measures class consistency. How
# does "the share of the top patches on the object" compare with a random order's share now?
#
# :::{dropdown} Solution
# A random order's expected share does not depend on `top`: it is the image's share of object
# patches, whatever the number of patches taken. The collapse order's share is now measured on its
# first 5 patches. If the top of the order sits on the object it rises above the random share. If
# the order starts on the background, as the last row of the table counts, it can fall below it.
# The table gives both numbers for the reader's run. Paper Fig. 4's claim is about the top 22%
# (11 patches), so with `top = 5` the chapter's verdict tests a different claim: set it back.
# :::

# %% tags=["remove-cell"]
# This run's "What we found" box (copkit.findings), from the claims just decided: shown here and
# glued for the top of the page, which pastes it under the title.
from copkit.findings import findings_box, glue_box

glue_box(findings_box({"03_rank": {"claims": claims}}, "03_rank"))
