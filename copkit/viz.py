"""The book's figures: images, per-patch maps on the token grid, orders, prefix curves.

Every function draws into a given matplotlib ``Axes`` (or makes a figure) and returns it, so a
chapter can compose panels and a reader can reuse one panel alone.

Figures are sized for the page they are read on: the site's text column is about
:data:`COLUMN_PX` css pixels wide at a 1280 px window, and a wider image is shrunk to fit it,
its lettering with it. :func:`panel_grid` makes a figure exactly the column's width at
:data:`DPI` (so it is shown pixel for pixel), :func:`sample_grid` shows generated images at their
natural size or larger, and :func:`title_overlaps` and :func:`smallest_font_px` measure a drawn
figure the way a reader meets it (the tests hold the book's figures to them).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter
from torch import Tensor

__all__ = ["DPI", "COLUMN_PX", "COLUMN_IN", "MIN_FONT_PX", "panel_grid", "shared_colorbar",
           "sample_grid", "title_overlaps", "smallest_font_px", "show_image", "token_map",
           "kept_patches", "keep_frequency", "draw_order", "prefix_curves", "line_panel",
           "seed_band", "mask_ratio_curves", "density_check", "kept_by_class", "knee_marker",
           "training_curve", "learning_curve", "eval_panels", "draw_collapse", "BOOK_STYLE",
           "use_book_style"]


#: Resolution of the book's figures. The chapters draw at this many pixels per inch, and a
#: figure's PNG is shown one image pixel per css pixel.
DPI = 110
#: Width of the site's text column, in css pixels, in a 1280 px window (tools/check_site.py
#: measures about 697): a figure wider than this is shrunk to fit.
COLUMN_PX = 690
#: The width in inches at :data:`DPI` of a figure shown at its natural size: the column, less
#: the 0.1 in of margin that a tight save (the notebooks' inline figures) adds on each side.
COLUMN_IN = (COLUMN_PX - 2 * 0.1 * DPI) / DPI
#: The smallest lettering, in css pixels on the page, that a figure may use.
MIN_FONT_PX = 10.0


#: The book's matplotlib settings, the resolution of its figures and their margins trimmed.
BOOK_STYLE: dict[str, Any] = {"figure.dpi": DPI, "savefig.bbox": "tight"}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib (every chapter does, through
    :func:`copkit.profiles.chapter_setup`)."""
    plt.rcParams.update(BOOK_STYLE)


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def panel_grid(rows: int, cols: int, *, aspect: float = 1.0, width: float = COLUMN_IN,
               title_lines: int = 1, colorbar: bool = False, suptitle: str | None = None,
               **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` x ``cols`` panels that a reader sees at its natural size: ``width``
    inches wide (the text column at :data:`DPI`), each panel ``aspect`` times as high as it is
    wide, with room above every panel for ``title_lines`` lines of title, on the right for a
    colour bar (``colorbar``), and at the top for ``suptitle``. Constrained layout keeps every
    title clear of the panels above it. Returns the figure and a (rows, cols) array of axes.

    >>> fig, axes = panel_grid(2, 5)
    >>> axes.shape, round(fig.get_figwidth() * fig.dpi)
    ((2, 5), 668)
    >>> plt.close(fig)
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"a grid needs at least one row and one column, got {rows} x {cols}")
    if aspect <= 0 or width <= 0:
        raise ValueError(f"aspect and width must be positive, got {aspect} and {width}")
    line = 1.45 * 9 / 72  # one line of a 9-point title, in inches
    panel = (width - (0.75 if colorbar else 0.0)) / cols - 0.1
    height = (rows * (panel * aspect + title_lines * line + 0.1) + (2 * line if suptitle else 0.0)
              + 0.1)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=DPI, squeeze=False,
                             layout="constrained", **subplot_kw)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig, axes


def shared_colorbar(fig: Figure, axes: Axes | Sequence[Axes] | np.ndarray, label: str,
                    mappable: Any = None) -> Any:
    """One colour bar, labelled ``label``, for panels that share one colour scale: beside
    ``axes``, for ``mappable`` (by default the last image drawn in the first of them, the
    overlay of :func:`token_map`)."""
    axs = list(np.ravel(np.asarray(axes, dtype=object)))
    if mappable is None:
        if not axs[0].images:
            raise ValueError("the first panel shows no image: pass the mappable to colour by")
        mappable = axs[0].images[-1]
    return fig.colorbar(mappable, ax=axs, label=label, shrink=0.9, aspect=30)


def sample_grid(samples: Mapping[str, Tensor | np.ndarray], labels: Tensor | np.ndarray,
                classes: Sequence[str], per_class: int = 8, cols: int = 2,
                zoom: float = 1.2) -> Figure:
    """Generated images shown so that a reader can look at them: one block per model
    (``samples[name]``: (n, 1, H, W) in [-1, 1], with the class of each in ``labels``), one row
    per class holding its first ``per_class`` images (at most 8), the class names on the rows,
    ``cols`` blocks side by side. Every image pixel is ``zoom`` css pixels on the page (a 28 px
    sample is shown 34 px wide at the default), and the figure is no wider than the text column,
    so the page does not shrink it; a missing sample is left white.
    """
    if not 1 <= per_class <= 8:
        raise ValueError(f"at most 8 samples per class, so that each is large enough to see; "
                         f"got {per_class}")
    if zoom < 1:
        raise ValueError(f"zoom below 1 would show samples smaller than they are, got {zoom}")
    lab = _np(labels).astype(int).reshape(-1)
    rows = [c for c in range(len(classes)) if (lab == c).any()]
    if not rows:
        raise ValueError("no sample has a class in classes")
    blocks = {}
    for name, x in samples.items():
        x = _np(x)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] != lab.size:
            raise ValueError(f"{name}: need ({lab.size}, 1, H, W) images, got {x.shape}")
        h, w = x.shape[2:]
        tiles = np.full((len(rows) * (h + 1) - 1, per_class * (w + 1) - 1), np.nan)
        for r, c in enumerate(rows):
            for k, i in enumerate(np.nonzero(lab == c)[0][:per_class]):
                tiles[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = x[i, 0]
        blocks[name] = tiles
    th, tw = next(iter(blocks.values())).shape
    label_px = 7.0 * max(len(classes[c]) for c in rows) + 12  # 9-point names, right-aligned
    title_px, gap = 26.0, 18.0
    block_w, block_h = tw * zoom, th * zoom
    n_cols = min(cols, len(blocks))
    n_rows = -(-len(blocks) // n_cols)
    width = label_px + n_cols * block_w + (n_cols - 1) * gap + 4
    height = n_rows * (title_px + block_h) + (n_rows - 1) * gap + 4
    if width > COLUMN_IN * DPI:
        raise ValueError(f"{n_cols} blocks at zoom {zoom} are {width:.0f} px wide, more than the "
                         f"{COLUMN_IN * DPI:.0f} px a figure may take in the column: use fewer "
                         "cols or a smaller zoom")
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    for b, (name, tiles) in enumerate(blocks.items()):
        r, c = divmod(b, n_cols)
        left = label_px + c * (block_w + gap)
        bottom = height - (r + 1) * (title_px + block_h) - r * gap
        ax = fig.add_axes((left / width, bottom / height, block_w / width, block_h / height))
        ax.imshow(np.ma.masked_invalid(tiles), cmap=cmap, vmin=-1, vmax=1, aspect="auto",
                  interpolation="antialiased")
        ax.set_xticks([])
        ax.set_title(name, fontsize=10)
        ax.set_yticks([k * (th + 1) / len(rows) + (th + 1) / len(rows) / 2 - 1
                       for k in range(len(rows))])  # the centre of each class's row
        ax.set_yticklabels([classes[k] for k in rows] if c == 0 else [], fontsize=9)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    return fig


def _box_overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def title_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """The titles of ``fig`` that, once it is drawn, lie over another panel or another title, as
    (title, what it covers) pairs; an empty list for a figure whose titles all stand clear. A
    panel is named by its title (or ``panel <i>``); panels at the same place (twin axes) count
    as one, and the figure's suptitle is a title too."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible()]
    titles = []
    for ax, _ in panels:
        for t in (ax.title, ax._left_title, ax._right_title):
            if t.get_visible() and t.get_text().strip():
                titles.append((t.get_text(), t.get_window_extent(renderer), ax))
    if fig._suptitle is not None and fig._suptitle.get_text().strip():
        titles.append((fig._suptitle.get_text(), fig._suptitle.get_window_extent(renderer), None))

    def name(ax: Axes) -> str:
        return ax.get_title() or f"panel {fig.axes.index(ax)}"

    out = []
    for text, box, owner in titles:
        own = None if owner is None else owner.get_window_extent(renderer)
        for ax, pbox in panels:
            same = own is not None and np.allclose(pbox.extents, own.extents)
            if not same and _box_overlap(box, pbox) > 1.0:
                out.append((text, name(ax)))
        for other, obox, _ in titles:
            if other is not text and _box_overlap(box, obox) > 1.0:
                out.append((text, other))
    return out


def smallest_font_px(fig: Figure, column_px: float = COLUMN_PX) -> float:
    """The smallest lettering of ``fig`` as a reader sees it, in css pixels: the size of every
    visible, non-empty text of the drawn figure (titles, labels, tick labels, legends, numbers
    written on panels) at the figure's DPI, times the share by which a page ``column_px`` wide
    shrinks the saved (tight) image when it is wider. ``inf`` for a figure without text."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pad = plt.rcParams["savefig.pad_inches"]
    saved = (fig.get_tightbbox(renderer).width + 2 * pad) * fig.dpi  # px of the saved PNG
    scale = min(1.0, column_px / saved)
    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_window_extent(renderer).width]
    return min(sizes) * fig.dpi / 72 * scale if sizes else float("inf")


def show_image(image: Tensor, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Draw a (1 or 3, H, W) image in [-1, 1]."""
    ax = ax or plt.gca()
    img = (_np(image).clip(-1, 1) + 1) / 2
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def token_map(values: Tensor | np.ndarray, grid: tuple[int, int], ax: Axes | None = None,
              image: Tensor | None = None, observed: Tensor | np.ndarray | None = None,
              cmap: str = "magma", vmin: float | None = None, vmax: float | None = None,
              alpha: float = 0.75, colorbar: bool | str = False, title: str | None = None,
              frame: bool = True) -> Axes:
    """A per-token quantity (N,) drawn as a heat map on the token grid.

    With ``image`` the map is laid over it. Tokens marked in ``observed`` are shown as the image
    (or grey), with a white frame unless ``frame`` is false: they are known, so their value is not
    drawn. ``colorbar`` adds a colour bar beside the panel, labelled with it when it is a string.
    """
    ax = ax or plt.gca()
    gh, gw = grid
    vals = _np(values).astype(float).reshape(gh, gw)
    obs = None if observed is None else _np(observed).astype(bool).reshape(gh, gw)
    shown = np.ma.masked_where(obs if obs is not None else np.zeros_like(vals, bool), vals)
    if image is not None:
        h, w = image.shape[-2:]
        show_image(image, ax)
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, extent=extent,
                       interpolation="nearest")
        ph, pw = h / gh, w / gw
    else:
        im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_facecolor("0.85")
        ax.set_xticks([])
        ax.set_yticks([])
        ph = pw = 1.0
        extent = (-0.5, gw - 0.5, gh - 0.5, -0.5)
    if obs is not None and frame:
        x0, y0 = extent[0], extent[3]
        for r, c in zip(*np.nonzero(obs)):
            ax.add_patch(Rectangle((x0 + c * pw, y0 + r * ph), pw, ph, fill=False, ec="white",
                                   lw=1.2))
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                           label=colorbar if isinstance(colorbar, str) else None)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def kept_patches(image: Tensor, keep: Tensor | np.ndarray | Sequence[int], grid: tuple[int, int],
                 ax: Axes | None = None, color: str = "#2659d9", alpha: float = 0.55,
                 title: str | None = None) -> Axes:
    """The image with the patches *not* in ``keep`` (token indices) shaded: what a model that
    keeps only those tokens sees. Drawn with :func:`token_map` (kept tokens are its "observed")."""
    n = grid[0] * grid[1]
    observed = keep_frequency(np.asarray(_np(keep)).reshape(1, -1), n) > 0
    return token_map(np.ones(n), grid, ax=ax, image=image, observed=observed,
                     cmap=ListedColormap([color]), vmin=0, vmax=1, alpha=alpha, title=title,
                     frame=False)


def keep_frequency(keeps: Tensor | np.ndarray, n_tokens: int) -> np.ndarray:
    """How often each of ``n_tokens`` tokens is among the kept ones: ``keeps`` is (B, K) token
    indices (one row per image, no repeats within a row); returns (n_tokens,) shares in [0, 1].

    >>> keep_frequency(np.array([[0, 2], [2, 3]]), 4).tolist()
    [0.5, 0.0, 1.0, 0.5]
    """
    k = np.asarray(_np(keeps)).astype(int)
    if k.ndim != 2:
        raise ValueError(f"keeps must be (images, kept), got shape {k.shape}")
    return np.bincount(k.reshape(-1), minlength=n_tokens)[:n_tokens] / max(1, k.shape[0])


def draw_order(order: Tensor | np.ndarray, grid: tuple[int, int], ax: Axes | None = None,
               image: Tensor | None = None, numbers: int | None = 10, cmap: str = "viridis_r",
               title: str | None = None, fontsize: float = 9) -> Axes:
    """Where each token comes in an order: colour = position, 1 = first (with the default
    ``viridis_r``, bright yellow = early, dark purple = late), the first ``numbers`` positions
    written on their patches in white with a black outline, ``fontsize`` points high. The colour
    layer is the panel's last image, for :func:`shared_colorbar`."""
    ax = ax or plt.gca()
    gh, gw = grid
    o = _np(order).astype(int)
    pos = np.empty_like(o)
    pos[o] = np.arange(1, o.size + 1)  # 1 = first, as the numbers read
    token_map(pos, grid, ax=ax, image=image, cmap=cmap, vmin=1, vmax=o.size,
              alpha=0.45 if image is not None else 1.0, title=title)
    if numbers:
        if image is not None:
            h, w = image.shape[-2:]
            ph, pw = h / gh, w / gw
        else:
            ph = pw = 1.0
        for k, t in enumerate(o[:numbers]):
            r, c = divmod(int(t), gw)
            ax.text(c * pw + (pw - 1) / 2, r * ph + (ph - 1) / 2, str(k + 1), ha="center",
                    va="center", fontsize=fontsize, color="white", fontweight="bold",
                    path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
    return ax


def prefix_curves(curves: Mapping[str, Tensor | np.ndarray], ax: Axes | None = None,
                  band: tuple[float, float] = (5, 95), ylabel: str = r"$H_c(S_k)$ (nats)") -> Axes:
    """Prefix curves :math:`H_c(S_k)` against the fraction observed :math:`k/N`.

    A (N+1,) curve is drawn as a line; a (B, N+1) batch as its mean with a percentile band.
    """
    ax = ax or plt.gca()
    for name, c in curves.items():
        c = _np(c)
        x = np.linspace(0, 1, c.shape[-1])
        if c.ndim == 1:
            ax.plot(x, c, label=name, lw=1.6)
        else:
            (line,) = ax.plot(x, c.mean(0), label=f"{name} (mean of {c.shape[0]})", lw=1.6)
            lo, hi = np.percentile(c, band, axis=0)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("fraction of patches observed, k / N")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def line_panel(x: Sequence[float] | Tensor | np.ndarray,
               curves: Mapping[str, Sequence[float] | Tensor | np.ndarray], ax: Axes | None = None,
               xlabel: str | None = None, ylabel: str | None = None,
               title: str | None = None) -> Axes:
    """Curves over one x axis in one panel, each ``curves[label]`` a line named by its label in
    the legend, with the axis labels, a 9-point ``title`` and a light grid: the book's plain line
    plot (Chapter 2's Eq. 4 curves)."""
    ax = ax or plt.gca()
    xs = _np(x)
    for label, y in curves.items():
        ax.plot(xs, _np(y), label=label)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def seed_band(x: Sequence[float] | np.ndarray, runs: Sequence[Sequence[float]] | np.ndarray,
              ax: Axes | None = None, label: str | None = None, color: str | None = None) -> Axes:
    """Mean over seeds as a line, min-max over seeds as a band; ``runs`` is (seeds, len(x))."""
    ax = ax or plt.gca()
    y = np.asarray(runs, dtype=float)
    (line,
     ) = ax.plot(x, y.mean(0),
                 label=f"{label} ({y.shape[0]} seeds)" if label and y.shape[0] > 1 else label,
                 color=color, lw=1.6)
    if y.shape[0] > 1:
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, lw=0)
    return ax


def knee_marker(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                knees: Sequence[float] | np.ndarray, ax: Axes | None = None,
                color: str | None = None) -> Axes:
    """Where a curve bends, over seeds: a dot at the mean knee position (NaN = no knee found, left
    out) on the curve ``y(x)``, with a bar spanning the seeds' knees; nothing when no seed has
    one."""
    ax = ax or plt.gca()
    k = np.asarray(knees, dtype=float)
    k = k[np.isfinite(k)]
    if k.size:
        kx = float(k.mean())
        ky = float(np.interp(kx, x, y))
        # clipped at 0: the mean of equal knees can round a hair past them
        span = [[max(kx - k.min(), 0.0)], [max(k.max() - kx, 0.0)]]
        ax.errorbar([kx], [ky], xerr=span, fmt="o", color=color, ms=6, mec="k", capsize=3)
    return ax


def mask_ratio_curves(ratios: Sequence[float] | np.ndarray, top1: Mapping[str, np.ndarray],
                      top5: Mapping[str, np.ndarray], knees: Mapping[str, np.ndarray] | None = None,
                      colors: Mapping[str, str] | None = None, mark: float | None = None,
                      n_patches: int | None = None, mark_label: str | None = None) -> Figure:
    """Paper Fig. 8's two panels, the text column wide: top-1 (left) and top-5 (right) accuracy in
    percent against the mask ratio, one :func:`seed_band` per model (``top1[name]``,
    ``top5[name]``: (seeds, ratios)), each model's Kneedle knees (``knees[name]``: the seeds' mask
    ratios) as a :func:`knee_marker` on its mean top-1 curve, and a dotted line at ``mark`` (the
    paper's 78%), named ``mark_label`` in the legend. The mask-ratio axis is labelled once under
    both panels and the legend above them, so that neither crowds a panel."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_IN, 3.4), dpi=DPI, layout="constrained")
    colors = colors or {}
    for name in top1:
        seed_band(ratios, top1[name], axes[0], label=name, color=colors.get(name))
        seed_band(ratios, top5[name], axes[1], label=name, color=colors.get(name))
        if knees is not None:
            knee_marker(ratios, np.asarray(top1[name]).mean(0), knees[name], axes[0],
                        color=colors.get(name))
    what = f"share of the {n_patches} patches removed" if n_patches else "share of patches removed"
    for ax, acc in zip(axes, ("top-1", "top-5")):
        if mark is not None:
            ax.axvline(mark, color="k", ls=":", lw=0.8, label=mark_label if ax is axes[0] else None)
        ax.set_ylabel(f"{acc} accuracy (%)")
        ax.grid(alpha=0.3)
    fig.supxlabel(f"mask ratio ({what})", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=3, fontsize=8)
    return fig


def density_check(draws: np.ndarray, pdf: Callable[[np.ndarray], np.ndarray],
                  support: tuple[float, float], ax: Axes | None = None, ylim: float | None = None,
                  label: str = "stated density") -> Axes:
    """A sampler against its density: a normalised histogram of ``draws`` with ``pdf(x)`` drawn
    over it on ``support`` (the drop-ratio sampler of Sec. 3.4
    against :func:`copkit.cvit.drop_ratio_pdf`)."""
    ax = ax or plt.gca()
    ax.hist(draws, bins=60, density=True, alpha=0.6, label=f"{len(draws):,} draws")
    x = np.linspace(*support, 400)
    ax.plot(x, pdf(x), "k", lw=1.4, label=label)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax


def kept_by_class(images: Tensor, labels: Tensor, chosen: Mapping[str, tuple[Tensor, Tensor]],
                  classes: Sequence[str], grid: tuple[int, int], per_row: int = 5,
                  suptitle: str | None = None) -> Figure:
    """What each model keeps, class by class (paper Fig. 4 / Fig. 8 style), the text column wide:
    the classes in blocks of ``per_row`` columns, one block under the other. In a block, for every
    entry ``name: (keep, pred)`` of ``chosen`` (kept token indices (n, k) and predicted labels
    (n,) of all ``images``), a row shows each class's first image with the patches not kept
    shaded (:func:`kept_patches`), titled with ``name``'s prediction (✓, or ✗ and the class it
    said; the class itself heads the first row); then a row per entry shows, over all images of
    the class, how often each patch is kept (:func:`keep_frequency`), with a colour bar from 0 to
    100%. The model's name labels each row."""
    n_models, n_classes = len(chosen), len(classes)
    if not 1 <= per_row <= n_classes:
        raise ValueError(f"per_row must be between 1 and the {n_classes} classes, got {per_row}")
    blocks = -(-n_classes // per_row)
    n_tokens = grid[0] * grid[1]
    fig, axes = panel_grid(2 * n_models * blocks, per_row, title_lines=2, colorbar=True,
                           suptitle=suptitle)
    for b in range(blocks):
        top = 2 * n_models * b
        for j in range(per_row):
            c = b * per_row + j
            if c >= n_classes:  # a short last block: its empty panels hidden
                for r in range(2 * n_models):
                    axes[top + r, j].set_visible(False)
                continue
            of_class = labels == c
            i = int(of_class.nonzero()[0])
            for m, (keep, pred) in enumerate(chosen.values()):
                said = "✓" if pred[i] == c else f"✗ {classes[int(pred[i])]}"
                kept_patches(images[i], keep[i], grid, axes[top + m, j],
                             title=f"{classes[c]}\n{said}" if m == 0 else said)
                token_map(keep_frequency(keep[of_class], n_tokens), grid,
                          axes[top + n_models + m, j], cmap="magma", vmin=0, vmax=1)
        for m, name in enumerate(chosen):
            axes[top + m, 0].set_ylabel(name, fontsize=9)
            axes[top + n_models + m, 0].set_ylabel(f"{name}: kept", fontsize=9)
        bar = shared_colorbar(fig, axes[top + n_models:top + 2 * n_models, :],
                              "kept in (% of the class)")
        bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    return fig


def training_curve(history: Sequence[Mapping[str, float]], key: str = "loss",
                   window: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A logged training metric smoothed for plotting: the training rows of ``history`` (the
    records of ``metrics.jsonl``; rows marked ``eval`` or without ``key`` are skipped), as
    (steps, moving average of ``key`` over ``window`` rows), each smoothed value at the step of its
    window's last row. The window shrinks to a quarter of the rows on short runs (at least 1).

    >>> losses = [4.0, 2.0, 0.0, 2.0, 4.0, 2.0, 0.0, 2.0]
    >>> rows = [{"step": t, "loss": v} for t, v in enumerate(losses, 1)]
    >>> training_curve(rows + [{"step": 8, "eval": 1, "loss": 9.0}], window=2)
    (array([2, 3, 4, 5, 6, 7, 8]), array([3., 1., 1., 3., 3., 1., 1.]))
    """
    rows = [r for r in history if key in r and not r.get("eval")]
    steps = np.array([r["step"] for r in rows])
    values = np.array([r[key] for r in rows], dtype=float)
    k = max(1, min(window, len(values) // 4))
    return steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid")


def learning_curve(history: Sequence[Mapping[str, Any]], eval_key: str, ax: Axes | None = None,
                   title: str | None = None, key: str = "loss", window: int = 50) -> Axes:
    """A base model's learning curve: the smoothed training ``key`` (:func:`training_curve`) on
    the left axis and the held-out ``eval_key`` of its evaluation rows on the right, over steps.
    Whether the held-out curve has flattened at the end is what "converged" means in this book."""
    ax = ax or plt.gca()
    steps, values = training_curve(history, key, window)
    ax.plot(steps, values, color="tab:gray", lw=1, label=f"training {key} (moving mean)")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training {key}")
    evals = [r for r in history if r.get("eval") and eval_key in r]
    right = ax.twinx()
    right.plot([r["step"] for r in evals], [r[eval_key] for r in evals], "o-", color="tab:blue",
               ms=3, label=f"held-out {eval_key}")
    right.set_ylabel(f"held-out {eval_key}", color="tab:blue")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def eval_panels(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], keys: Sequence[str],
                axes: Sequence[Axes], ylabels: Sequence[str] | None = None) -> Sequence[Axes]:
    """Held-out curves of several settings side by side: one panel per metric in ``keys``, one
    line per setting of ``runs`` (label -> the evaluation rows of each seed's run), the mean over
    seeds with a min-max band (:func:`seed_band`), at the steps every seed's run evaluated (a run
    extended from a checkpoint, :func:`copkit.checkpoint.extend`, has one more evaluation where
    it was extended)."""
    for label, seeds in runs.items():
        by_step = [{r["step"]: r for r in rows} for rows in seeds]
        steps = sorted(set.intersection(*(set(rows) for rows in by_step)))
        if not steps:
            raise ValueError(f"{label}: its seeds' runs share no evaluated step")
        for ax, key in zip(axes, keys):
            seed_band(steps, [[rows[t][key] for t in steps] for rows in by_step], ax, label=label)
    for i, ax in enumerate(axes):
        if ylabels:
            ax.set_ylabel(ylabels[i])
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return axes


def draw_collapse(image: Tensor, order: Tensor | np.ndarray, grid: tuple[int, int], top: int,
                  ax: Axes | None = None, title: str | None = None,
                  color: str = "tab:orange") -> Axes:
    """Paper Fig. 4's style: a circle on every patch, larger the earlier it comes in the order,
    and the first ``top`` patches joined by a line in order (a square marks the first)."""
    ax = ax or plt.gca()
    show_image(image, ax, title)
    gh, gw = grid
    h, w = image.shape[-2:]
    ph, pw = h / gh, w / gw
    o = _np(order).astype(int)
    n = o.size
    pos = np.empty_like(o)
    pos[o] = np.arange(n)
    rows, cols = np.divmod(np.arange(n), gw)
    cx, cy = cols * pw + (pw - 1) / 2, rows * ph + (ph - 1) / 2
    ax.scatter(cx, cy, s=4 + 60 * (1 - pos / (n - 1)) ** 2, facecolors="none", edgecolors=color,
               linewidths=0.8)
    first = o[:top]
    ax.plot(cx[first], cy[first], color=color, lw=1.2, alpha=0.9)
    ax.scatter(cx[first[:1]], cy[first[:1]], marker="s", s=40, color=color)
    return ax
