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
# # 1. Patch collapse, measured exactly
#
# *Source:* [`chapters/01_entropy.py`](../chapters/01_entropy.py), a jupytext script: open it in JupyterLab as a
# notebook, or run it with `python tools/run_chapters.py 01_entropy --profile smoke` (into `.scratch/book/smoke/`).
#
# [*The Collapse of Patches*](https://arxiv.org/abs/2511.22281) (Guo et al., 2025) starts from one observation: once some
# {term}`patches <patch>` of an image are known, the others become less uncertain, and some patches make the rest
# {term}`collapse` faster than others. The paper's models ({term}`CoMAE`, {term}`PageRank`) only *estimate* which patches
# those are. This chapter computes the same quantities **exactly**, for a model simple enough to
# allow it: a {term}`Gaussian <Gaussian model>` distribution over the 49 patch {term}`tokens <token>` of a Fashion-MNIST
# image. It is the ground truth the later chapters are checked against.
#
# What this chapter shows, with numbers at the end:
#
# 1. how the uncertainty of every patch falls as patches are observed ({term}`entropy` maps, and samples
#    of the image given what is known);
# 2. the {term}`prefix curve` $H_c(S_k)$ of an order, and how far apart good and bad orders are;
# 3. that the paper's objective, Eq. 1, is the *same number for every order*, so the prefix
#    curve, not Eq. 1, is what an order can improve;
# 4. which patches come first in the best ({term}`greedy <greedy order>`) order, per class and for a natural photo.

# %% [markdown]
# ```{glue:md} findings
# :format: myst
# ```

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | gpu: the sizes, see copkit.profiles
device = "auto"  # auto | cpu | cuda
seed = 0  # seed of the random orders
results_dir = "../book/results"  # where this chapter's results file goes

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from scipy.stats import spearmanr

from copkit import fmt, stats, viz
from copkit.data import CLASSES, load_fashion_mnist, photo_crops
from copkit.entropy import DEQUANTIZATION_VARIANCE, GaussianTokens, curve_area
from copkit.profiles import get_profile, pick_device
from copkit.results import (
    claim,
    decide,
    in_words,
    markdown_table,
    mean_sd,
    summary,
    tested,
    write_results,
)
from copkit.tokens import (
    PATCH,
    SIDE,
    grid_shape,
    order_places_text,
    patch_places,
    patchify,
    random_orders,
    unpatchify,
)

started = time.perf_counter()
P = get_profile(profile)
dev = pick_device(device)
# Exact entropies need float64: on Apple's MPS (no float64) the chapter computes on the CPU.
calc = dev if dev.type == "cuda" else torch.device("cpu")
plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight"})
print(f"profile={P.name} ({P.description}); computing on {calc}")

# %% [markdown]
# ## Images as tokens
#
# A 28 x 28 image is cut into 4 x 4 pixel patches: a 7 x 7 grid of $N = 49$ tokens, each a
# vector of $d = 16$ pixel values in $[-1, 1]$. The paper's tokens are 16-channel latents of a VAE
# on a 16 x 16 grid; ours have the same dimension on a smaller grid, and are plain pixels, so the
# picture of a token is the token.

# %% mystnb={"figure": {"caption": "One Fashion-MNIST test image per class, cut into the 7 x 7 grid of 4 x 4-pixel patches that are the tokens of every chapter.", "name": "fig-ch1-patch-grid"}, "image": {"alt": "Ten small grey-scale clothing images, from T-shirt to ankle boot, each overlaid with an orange 7 by 7 grid."}}
p = PATCH
train_x, train_y = load_fashion_mnist("train", limit=P.entropy.fit_images)
test_x, test_y = load_fashion_mnist("test")
grid = grid_shape(SIDE, SIDE, p)
tokens = patchify(train_x, p)
N, d = tokens.shape[1:]
print(f"{fmt.count(train_x.shape[0])} training images -> tokens {tuple(tokens.shape)}: N={N} tokens of d={d} "
      f"on a {grid[0]}x{grid[1]} grid")

fig, axes = plt.subplots(1, 10, figsize=(12, 1.6))
for c, ax in enumerate(axes):
    img = test_x[(test_y == c).nonzero()[0, 0]]
    viz.show_image(img, ax, CLASSES[c])
    for t in range(1, 7):
        ax.axhline(4 * t - 0.5, color="tab:orange", lw=0.4)
        ax.axvline(4 * t - 0.5, color="tab:orange", lw=0.4)
fig.suptitle("One test image per class with its 7 x 7 grid of 4 x 4 patches", y=1.05)
plt.show()

# %% [markdown]
# ## A Gaussian model of the tokens
#
# Fit the mean $\mu$ and covariance $\Sigma$ of all $N d = 784$ token coordinates. For a
# Gaussian, the entropy of token $n$ given the observed set $S$ is exact,
#
# $$
# H(e_n \mid e_S) = \tfrac12 \log\det\left(2\pi e\, \Sigma_{n\mid S}\right), \qquad
# \Sigma_{n\mid S} = \Sigma_{nn} - \Sigma_{nS}\Sigma_{SS}^{-1}\Sigma_{Sn},
# $$
#
# and `copkit.entropy` computes it with {term}`Cholesky factors <Cholesky factor>`, never an explicit inverse.
#
# **Regularisation.** Many border pixels of Fashion-MNIST are black in every image, so the sample
# covariance is singular. We add $\varepsilon = (2/255)^2/12 \approx 5.1\times10^{-6}$ to its
# diagonal: the variance of uniform noise over one 8-bit grey level. It treats each pixel as the
# continuous value that rounds to the stored one, which makes every differential entropy finite.
# The price is that a token that never varies has a very *negative* entropy (about
# $16 \cdot \tfrac12\log(2\pi e\,\varepsilon) \approx -75$ {term}`nats`): it is almost perfectly known
# before anything is observed. Entropies below are in nats and can be negative; differences
# between orders are what matter.

# %% mystnb={"figure": {"caption": "The mean training image, and the entropy of each patch before anything is observed, $H(e_n)$, under the Gaussian token model: border patches that never vary are almost certain.", "name": "fig-ch1-marginal-entropy"}, "image": {"alt": "Left: a blurry mean garment. Right: a 7 by 7 heat map of patch entropies, high in the centre where the garments are and low at the borders."}}
model = GaussianTokens.fit(tokens.to(calc), eps=DEQUANTIZATION_VARIANCE)
marginal = model.marginal_entropies().cpu()
joint = model.joint_entropy().item()
print(f"eps = {fmt.sig(DEQUANTIZATION_VARIANCE, 2)}; joint entropy H(e_1..e_N) = {fmt.num(joint, 2)} nats; "
      f"sum of marginals H_c(empty set) = {fmt.num(marginal.sum().item(), 2)} nats")

fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8))
viz.show_image(train_x.mean(0), axes[0], "mean training image")
viz.token_map(marginal, grid, axes[1], cmap="magma", colorbar=True, title="H(e_n), nothing observed (nats)")
plt.show()

# %% [markdown]
# ## The collapse, made visible
#
# Take the greedy order (next section: each step observes the patch after which the total
# remaining entropy is smallest) and observe its first $k$ patches of a test image. The top row
# shows what is left of each unobserved patch's entropy; observed patches show the image itself,
# framed in white. The middle row is the model's best guess of the whole image given those
# patches (the conditional mean), the bottom rows two draws from the conditional distribution:
# as $k$ grows, the draws stop disagreeing: the patches collapse.

# %% mystnb={"figure": {"caption": "Observing the first $k$ patches of the greedy order of an ankle boot: the entropy left in each unobserved patch (top row), the conditional mean (second row) and two conditional draws, which stop disagreeing as $k$ grows.", "name": "fig-ch1-collapse"}, "image": {"alt": "A grid of four rows and six columns for k = 0, 3, 6, 12, 24 and 36: entropy maps fading as patches are observed, the reconstructed boot getting sharper and the two random draws becoming alike."}}
greedy = model.greedy_order().cpu()
example = test_x[(test_y == 9).nonzero()[0, 0]]  # an ankle boot
ex_tokens = patchify(example, p).to(calc)
ks = [0, 3, 6, 12, 24, 36]
hmax = marginal.max().item()
hmin = marginal.min().item()
fig, axes = plt.subplots(4, len(ks), figsize=(1.9 * len(ks), 7.6))
for col, k in enumerate(ks):
    observed = torch.zeros(N, dtype=torch.bool)
    observed[greedy[:k]] = True
    h = model.conditional_entropy(observed.to(calc)).cpu()
    hc = h[~observed].sum().item()
    viz.token_map(torch.where(observed, 0.0, h), grid, axes[0, col], image=example, observed=observed,
                  vmin=hmin, vmax=hmax, alpha=1.0, title=f"k={k}: $H_c$={fmt.num(hc, 0)}")
    mean, _ = model.conditional(ex_tokens, observed.to(calc))
    viz.show_image(unpatchify(mean.float().cpu(), p, (1, SIDE, SIDE)), axes[1, col])
    draws = model.sample_conditional(ex_tokens, observed.to(calc), 2, seed=seed + k).float().cpu()
    for r in range(2):
        viz.show_image(unpatchify(draws[r], p, (1, SIDE, SIDE)), axes[2 + r, col])
for r, label in enumerate(["entropy left", "conditional mean", "a draw", "another draw"]):
    axes[r, 0].set_ylabel(label, fontsize=9)
fig.suptitle("Observing the first k patches of the greedy order", y=1.0)
fig.tight_layout()
plt.show()

# %% [markdown]
# (ch1-prefix-curve)=
# ## The prefix curve: what an order changes
#
# The paper's Definition 1 (Eq. 8) measures the entropy left in the unobserved patches once a set
# $S$ is known, $H_c(S) = \sum_{n \notin S} H(e_n \mid e_S)$ (the observed patches are left out
# of the sum; a known continuous value has entropy $-\infty$). An order $o$ visits the patches one
# by one; its **prefix curve** is $H_c(S_k)$ for the first $k$ patches, $k = 0..N$. Every curve
# starts at the sum of the marginal entropies and ends at 0; a good order makes it fall early. We
# summarise a curve by its area over the fraction observed $k/N$ (lower is better). A patch's own
# term leaves the sum when it is observed, so a patch that is nearly certain anyway (a negative
# entropy, like the black border) is best left for last; that is why curves can rise. We compare:
#
# - **greedy**: each step observes the patch after which $H_c$ is smallest (scored exactly for
#   every candidate);
# - **anti-greedy**: each step observes the patch after which $H_c$ is *largest*;
# - **greedy reversed**: the greedy order read backwards;
# - **raster**: row by row, as an autoregressive model reads an image;
# - **random**: uniformly random orders, mean and 5-95% band.


# %% mystnb={"figure": {"caption": "Prefix curves $H_c(S_k)$ of the greedy, anti-greedy, reversed greedy, raster and random orders on Fashion-MNIST: the greedy order's curve falls earliest.", "name": "fig-ch1-prefix-curves"}, "image": {"alt": "Line plot of the entropy left against the fraction of patches observed; the greedy curve lies lowest, the anti-greedy highest, random orders in a band between."}}
def order_table(m: GaussianTokens, n_random: int, rng_seed: int) -> tuple[dict, dict]:
    """Prefix curves and their areas for the reference orders of a fitted model."""
    g = m.greedy_order().cpu()
    orders = {
        "greedy": g,
        "raster": torch.arange(m.n_tokens),
        "greedy reversed": g.flip(0),
        "anti-greedy": m.greedy_order(worst=True).cpu(),
    }
    curves = {name: m.prefix_curve(o.to(m.mean.device)).cpu() for name, o in orders.items()}
    curves["random"] = m.prefix_curve(random_orders(n_random, m.n_tokens, seed=rng_seed).to(m.mean.device)).cpu()
    areas = {name: curve_area(c) for name, c in curves.items()}
    return curves, areas


def areas_markdown(areas: dict, title: str) -> str:
    """The orders' prefix-curve areas, lowest first; the random orders as mean ± sd."""
    rows = [[f"random (mean ± sd of {len(a)})", mean_sd(a.numpy())] if a.dim() else [name, fmt.num(a.item(), 1)]
            for name, a in sorted(areas.items(), key=lambda kv: kv[1].mean().item())]
    return markdown_table([title, "area under $H_c(S_k)$ (nats)"], rows)


def nats(v: float) -> str:
    """An area as the tables print it."""
    return fmt.num(v, 1)


def spread_text(areas: dict) -> str:
    """What the Fashion-MNIST table shows, each comparison written from its numbers."""
    rand = areas["random"].numpy()
    greedy, anti, rev = (areas[k].item() for k in ("greedy", "anti-greedy", "greedy reversed"))
    text = (fmt.compare("The greedy order's area", greedy, f"the lowest of the {len(rand)} random orders'", rand.min(),
                        nats) + ", and " + fmt.compare("the anti-greedy order's", anti, "the highest random one's",
                                                       rand.max(), nats) + ". ")
    text += fmt.compare("The greedy order *reversed*", rev, "the anti-greedy order", anti, nats)
    if round(rev, 1) < round(anti, 1):
        text += ": reversing the best order is not the same as choosing badly at every step."
    else:
        text += ": here reversing the best order is as bad as choosing badly at every step."
    return text


def photo_vs_fashion(fashion: dict, photo: dict) -> str:
    """How the orders compare on the photo and on Fashion-MNIST, written from the two tables."""
    mean = {d: {k: v.mean().item() for k, v in a.items()} for d, a in (("fashion", fashion), ("photo", photo))}
    span = {d: max(m.values()) - min(m.values()) for d, m in mean.items()}
    return (fmt.compare("The spread between the best and the worst order on the photo", span["photo"],
                        "on Fashion-MNIST", span["fashion"], lambda v: f"{nats(v)} nats",
                        words=("larger than", "smaller than"))
            + ". Ranked by area, lowest first, from Fashion-MNIST to the photo (random: the mean of the random "
            "orders): " + fmt.ranking_moves(mean["fashion"], mean["photo"], show=nats) + ".")


curves, areas = order_table(model, P.entropy.random_orders, seed)
fig, ax = plt.subplots(figsize=(6.5, 4))
viz.prefix_curves({k: curves[k] for k in ["random", "raster", "greedy", "greedy reversed", "anti-greedy"]}, ax)
ax.set_title("Fashion-MNIST: entropy left in the unobserved patches")
plt.show()

# %%
display(Markdown(areas_markdown(areas, "order (Fashion-MNIST)")))

# %% tags=["remove-input"]
display(Markdown(spread_text(areas)))

# %% [markdown]
# (ch1-eq1)=
# ## Eq. 1 cannot tell orders apart
#
# The paper's objective (Eq. 1) sums, over all patches, the entropy of each patch given the
# patches ranked above it: $\sum_n H(e_n \mid \{e_i : R(e_i) > R(e_n)\})$. By the {term}`chain rule` of
# entropy, $H(a) + H(b \mid a) = H(a, b)$, so for *any* order this sum telescopes to the joint
# entropy $H(e_1, \dots, e_N)$. We compute it term by term along several orders: the numbers agree
# to the last digits. Minimising Eq. 1 over rankings is therefore vacuous; the order-dependent
# quantity is Definition 1 along the prefixes, the curve above.

# %%
eq1_orders = {"raster": torch.arange(N), "greedy": greedy, "anti-greedy": model.greedy_order(worst=True).cpu()}
for i, o in enumerate(random_orders(5, N, seed=seed + 1)):
    eq1_orders[f"random #{i + 1}"] = o
eq1 = {name: model.chain_rule_sum(o.to(calc)).item() for name, o in eq1_orders.items()}
eq1_values = np.array(list(eq1.values()))
eq1_spread = float((eq1_values.max() - eq1_values.min()) / abs(joint))
display(Markdown(markdown_table(["order", "Eq. 1, term by term (nats)"],
                                [*([name, fmt.num(v, 10)] for name, v in eq1.items()),
                                 ["joint entropy, $\\tfrac12\\log\\det(2\\pi e\\Sigma)$", fmt.num(joint, 10)]])))
print(f"largest relative difference between orders: {fmt.sig(eq1_spread, 2)}")
assert eq1_spread < 1e-6, "the chain rule must make Eq. 1 order-invariant"

# %% [markdown]
# ## Which patches come first
#
# A single Gaussian gives *one* order for every image: its conditional covariances do not depend
# on the observed values. To see how the best order depends on content we fit one model per class
# and draw each class's greedy order on the class's mean image (the number is the position in the
# order; dark = early).

# %% mystnb={"figure": {"caption": "The greedy order of a Gaussian fitted to each class, drawn on the class's mean image with its first 8 patches numbered (dark = early).", "name": "fig-ch1-class-orders"}, "image": {"alt": "Ten mean images, one per class, each with the numbers 1 to 8 on the first patches of its order."}}
class_orders = []
class_means = []
fig, axes = plt.subplots(2, 5, figsize=(11, 5.4))
for c, ax in enumerate(axes.flat):
    xc = train_x[train_y == c][: P.entropy.per_class_images] if P.entropy.per_class_images else train_x[train_y == c]
    mc = GaussianTokens.fit(patchify(xc, p).to(calc))
    oc = mc.greedy_order().cpu()
    class_orders.append(oc)
    class_means.append(xc.mean(0))
    viz.draw_order(oc, grid, ax, image=xc.mean(0), numbers=8, title=f"{CLASSES[c]} (n={xc.shape[0]})")
fig.suptitle("Greedy order of a Gaussian fitted to each class: the first 8 patches numbered", y=1.0)
fig.tight_layout()
plt.show()

positions = torch.stack([torch.argsort(o) for o in class_orders]).numpy()  # position of each patch
rho = spearmanr(positions.T).statistic
off_diag = rho[~np.eye(10, dtype=bool)]
i, j = np.unravel_index(np.argmin(rho), rho.shape)
print(f"Spearman correlation between the classes' orders: mean {fmt.num(off_diag.mean(), 2)}, "
      f"max {fmt.num(off_diag.max(), 2)}, min {fmt.num(rho[i, j], 2)} ({CLASSES[i]} vs {CLASSES[j]})")

# %% [markdown]
# Where do the orders start? On each class's mean image a patch is *on the garment* when any of
# its pixels is brighter than 10% grey (`copkit.tokens.object_patches`), *inside* it when its four
# neighbours are on the garment too, and on its *edge* otherwise (`copkit.tokens.patch_places`).

# %% tags=["remove-input"]
class_places = order_places_text(torch.stack(class_orders), torch.stack(class_means), k=8,
                                 words=("on the background", "on its edge", "inside the garment"), what="classes")
places = torch.gather(patch_places(torch.stack(class_means)), 1, torch.stack(class_orders))
first_bg, last_bg = (places[:, :8] == 0).float().mean().item(), (places[:, -8:] == 0).float().mean().item()
pairs = sorted(((rho[a, b], a, b) for a in range(10) for b in range(a + 1, 10)), reverse=True)
loner = int(np.argmin([np.delete(rho[c], c).max() for c in range(10)]))
display(Markdown(
    f"{class_places} "
    + ("The garment comes first, inside it or on its edge, where the pixels vary most from image to image and predict "
       "their neighbours" if first_bg < 0.1 else f"The orders do not keep to the garment at first ({fmt.share(first_bg, 0)} "
       "of their first 8 patches lie on the background)")
    + ("; the background, known before anything is observed, comes last. " if last_bg > 0.5 else
       f"; only {fmt.share(last_bg, 0)} of their last 8 patches lie on the background. ")
    + "Classes with similar silhouettes share much of their order ({term}`Spearman correlation` of the patches' "
    "positions): the most alike are "
    + fmt.listing(f"{CLASSES[a]} and {CLASSES[b]} ({fmt.num(r, 2)})" for r, a, b in pairs[:3])
    + f"; {CLASSES[loner]} agrees least with every other class (at most {fmt.num(np.delete(rho[loner], loner).max(), 2)})."))

# %% [markdown]
# ## A natural photo
#
# The same model fitted to random 28 x 28 crops of scikit-image's *camera* photo (resized to a
# quarter) gives a second, quite different set of statistics: no black background, smooth
# correlations that fall off with distance.

# %% mystnb={"figure": {"caption": "The same model on 28 x 28 crops of scikit-image's camera photo: the greedy order on a crop, the entropy of each patch before anything is observed, and the prefix curves of the orders.", "name": "fig-ch1-photo"}, "image": {"alt": "Left: a grey crop of a photograph with numbered patches spread over the grid; middle: a fairly even entropy map; right: prefix curves with the greedy order lowest."}}
crops = photo_crops("camera", P.entropy.photo_crops, SIDE, scale=0.25, seed=seed)
photo_model = GaussianTokens.fit(patchify(crops, p).to(calc))
photo_curves, photo_areas = order_table(photo_model, P.entropy.random_orders, seed)
photo_greedy = photo_model.greedy_order().cpu()

fig = plt.figure(figsize=(11, 3.4))
ax0 = fig.add_subplot(1, 3, 1)
viz.draw_order(photo_greedy, grid, ax0, image=crops[0], numbers=10, title="greedy order on a crop")
ax1 = fig.add_subplot(1, 3, 2)
viz.token_map(photo_model.marginal_entropies().cpu(), grid, ax1, colorbar=True, title="H(e_n), nothing observed")
ax2 = fig.add_subplot(1, 3, 3)
viz.prefix_curves({k: photo_curves[k] for k in ["random", "raster", "greedy", "anti-greedy"]}, ax2)
ax2.set_title("camera crops: prefix curves", fontsize=9)
fig.tight_layout()
plt.show()

# %%
display(Markdown(areas_markdown(photo_areas, "order (camera crops)")))

# %% [markdown]
# On the photo's smoother statistics the greedy order spreads its first patches over the grid:
# each new patch lies away from those already known, where it still has something to tell.

# %% tags=["remove-input"]
display(Markdown(photo_vs_fashion(areas, photo_areas)))

# %% [markdown]
# ## What the Gaussian model captures, and what it cannot
#
# - **It captures** linear dependence between pixels: how much knowing one patch narrows down
#   another *on average*. For this model every entropy, curve and greedy step above is exact,
#   with no estimator in between, which is why later chapters use it as ground truth.
# - **It cannot** make the order depend on the image. A Gaussian's conditional covariance
#   ignores the observed values, so all images share one order (one per class when fitted per
#   class). The paper's CoMAE exists precisely to produce a per-image order; a Gaussian cannot
#   say that *this* boot's heel matters more than *that* boot's.
# - It cannot represent multi-modal uncertainty (a sleeve that is either there or not), edges
#   or textures beyond second-order statistics; its draws above look like blurred garments, not
#   like real ones.
# - Its entropies depend on the stated regularisation $\varepsilon$ for the patches that never
#   vary; orders among informative patches do not.

# %% [markdown]
# ## What this chapter found

# %%
rand = summary(areas["random"].numpy())
greedy_vs_random_sd = (rand["mean"] - areas["greedy"].item()) / rand["std"]
claims = {
    "eq1.order_invariant": claim(
        paper="Eq. 1 is minimised over rankings R (an order-dependent objective)",
        ours={"relative_spread_across_orders": eq1_spread, "n_orders": len(eq1), "joint_entropy_nats": joint},
        verdict="not reproduced", exact=True,
        why=(f"By the chain rule Eq. 1 equals the joint entropy for every order: along {len(eq1)} orders (raster, "
             f"greedy, anti-greedy, {len(eq1) - 3} random) the sum is {fmt.num(joint, 4)} nats each time, varying by "
             f"{fmt.sig(eq1_spread, 2)} relative, so it cannot rank orders; Definition 1 along the prefixes can."),
        section="ch1-eq1", headline=True,
    ),
    "def1.order_matters": tested(
        paper="the order in which patches are observed changes how fast the rest collapse (Def. 1, Eq. 8)",
        ours={"greedy_area_nats": areas["greedy"].item(), "random_area_nats": rand,
              "anti_greedy_area_nats": areas["anti-greedy"].item(), "greedy_below_random_sd": greedy_vs_random_sd},
        # random orders against the greedy one: do they leave more entropy behind (a larger area)?
        record=stats.one_sample(areas["random"].numpy(), areas["greedy"].item(), unit="random orders"),
        expect="higher",
        why=(f"Under an exact Gaussian model of Fashion-MNIST tokens the greedy order's prefix-curve area is "
             f"{nats(areas['greedy'].item())} nats against {mean_sd(rand)} for {rand['n']} random orders "
             f"({fmt.num(greedy_vs_random_sd, 1)} standard deviations lower), raster {nats(areas['raster'].item())} and "
             f"anti-greedy {nats(areas['anti-greedy'].item())}; on crops of the camera photo greedy "
             f"{nats(photo_areas['greedy'].item())}, raster {nats(photo_areas['raster'].item())}, random "
             f"{nats(photo_areas['random'].mean().item())}, anti-greedy {nats(photo_areas['anti-greedy'].item())} nats."),
        section="ch1-prefix-curve", headline=True,
    ),
}
claims = decide(claims, "01_entropy", results_dir)
metrics = {
    "n_fit_images": int(train_x.shape[0]),
    "eps": DEQUANTIZATION_VARIANCE,
    "fashion_mnist.area_nats": {k: (summary(v.numpy()) if v.dim() else v.item()) for k, v in areas.items()},
    "photo_camera.area_nats": {k: (summary(v.numpy()) if v.dim() else v.item()) for k, v in photo_areas.items()},
    "eq1.chain_rule_sum_nats": eq1,
    "class_orders.spearman_mean": float(off_diag.mean()),
    "greedy_order": greedy.tolist(),
    "class_greedy_orders": [o.tolist() for o in class_orders],
    "runtime_s": time.perf_counter() - started,
}
path = write_results(results_dir, "01_entropy", profile=P.name, device=str(calc), seeds=[seed],
                     claims=claims, metrics=metrics)
display(Markdown(in_words(claims) + f"""

**Beside the paper's claims**

- **Orders depend on content.** Greedy orders of the ten class
  models agree with a mean Spearman correlation of {fmt.num(off_diag.mean(), 2)}: similar silhouettes share an order,
  different ones do not.
- Profile `{P.name}`, {fmt.count(train_x.shape[0])} training images; results written to `{path.name}`.
  How long the chapter takes is in `runtimes-{P.name}.json`, which the report and the introduction show.
"""))

# %% tags=["remove-cell"]
# This run's "What we found" box (copkit.findings), from the claims just decided: shown here and
# glued for the top of the page, which pastes it under the title.
from copkit.findings import findings_box, glue_box

glue_box(findings_box({"01_entropy": {"claims": claims}}, "01_entropy"))
