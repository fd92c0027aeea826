"""The figure helpers draw what they say: checked on the arrays matplotlib was handed."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from copkit import viz  # noqa: E402


def test_kept_patches_shades_exactly_the_tokens_not_kept():
    fig, ax = plt.subplots()
    image = torch.zeros(1, 28, 28)
    keep = torch.tensor([0, 10, 48])
    viz.kept_patches(image, keep, (7, 7), ax=ax)
    overlay = ax.images[-1].get_array()  # the shading laid over the image, one cell per token
    assert overlay.shape == (7, 7)
    shaded = ~np.ma.getmaskarray(overlay)
    expected = np.ones(49, bool)
    expected[[0, 10, 48]] = False
    assert np.array_equal(shaded.reshape(-1), expected)
    assert not ax.patches  # no frames drawn around the kept patches
    plt.close(fig)


def test_keep_frequency_counts_against_a_loop():
    rng = np.random.default_rng(0)
    keeps = np.stack([rng.permutation(49)[:11] for _ in range(30)])
    freq = viz.keep_frequency(torch.from_numpy(keeps), 49)
    loop = np.array([sum(t in row for row in keeps) for t in range(49)]) / 30
    assert np.allclose(freq, loop)
    assert freq.sum() == pytest.approx(11)  # each image keeps 11
    with pytest.raises(ValueError, match="keeps must be"):
        viz.keep_frequency(np.arange(5), 49)


def test_knee_marker_at_mean_knee_on_the_curve_and_skips_missing():
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 11)
    y = 100 - 50 * x
    viz.knee_marker(x, y, [0.2, np.nan, 0.4], ax=ax)
    (line,) = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert line.get_xdata()[0] == pytest.approx(0.3) and line.get_ydata()[0] == pytest.approx(85.0)
    fig2, ax2 = plt.subplots()
    viz.knee_marker(x, y, [np.nan, np.nan], ax=ax2)
    assert not ax2.lines
    plt.close(fig)
    plt.close(fig2)


def test_training_curve_is_a_moving_average_of_the_training_rows():
    rng = np.random.default_rng(1)
    loss = rng.normal(size=60)
    rows = [{"step": 10 * i, "loss": float(v)} for i, v in enumerate(loss)]
    # an evaluation row: not part of the curve
    rows.insert(30, {"step": 295, "eval": 1, "loss": 100.0})
    rows.insert(5, {"step": 45, "lr": 0.1})  # a row without the key
    steps, smooth = viz.training_curve(rows, window=7)
    loop = [loss[i - 6:i + 1].mean() for i in range(6, 60)]
    assert np.allclose(smooth, loop)
    assert list(steps) == [10 * i for i in range(6, 60)]
    # 6 rows: the window shrinks to 6 // 4 = 1
    few = [{"step": i, "loss": float(i)} for i in range(6)]
    assert np.array_equal(viz.training_curve(few, window=10)[1], np.arange(6.0))


def test_mask_ratio_curves_draw_one_band_per_model_and_the_knees():
    r = np.linspace(0, 0.99, 12)
    top1 = {"A": np.stack([80 - 50 * r, 82 - 50 * r]), "B": np.stack([70 - 60 * r] * 2)}
    top5 = {k: v + 10 for k, v in top1.items()}
    fig = viz.mask_ratio_curves(r, top1, top5,
                                {"A": np.array([0.5, 0.7]), "B": np.array([np.nan, np.nan])},
                                {"A": "tab:red", "B": "tab:blue"}, mark=0.78, n_patches=49)
    left, right = fig.axes
    means = [line.get_ydata() for line in left.get_lines()
             if line.get_label().startswith(("A", "B"))]
    assert np.allclose(means[0], top1["A"].mean(0)) and np.allclose(means[1], top1["B"].mean(0))
    knee = [c for c in left.containers]  # one errorbar for A (B found no knee)
    assert len(knee) == 1 and np.allclose(knee[0].lines[0].get_xdata(), [0.6])
    assert np.allclose(knee[0].lines[0].get_ydata(), [np.interp(0.6, r, top1["A"].mean(0))])
    assert "49 patches" in fig.get_supxlabel()  # one mask-ratio label under both panels
    assert any(np.allclose(line.get_xdata(), 0.78) for line in right.get_lines())
    plt.close(fig)


def test_density_check_histogram_is_a_density_beside_the_pdf():
    draws = np.random.default_rng(0).uniform(0, 1, 5000)
    ax = viz.density_check(draws, lambda x: np.ones_like(x), (0.0, 1.0))
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert np.sum(heights * widths) == pytest.approx(1.0)
    assert np.allclose(ax.get_lines()[0].get_ydata(), 1.0)
    plt.close(ax.figure)


def test_kept_by_class_shows_each_classes_first_image_and_its_keep_frequency():
    images = torch.zeros(6, 1, 28, 28)
    labels = torch.tensor([1, 0, 1, 0, 2, 2])
    keep = torch.tensor([[0, 1], [0, 2], [3, 4], [0, 5], [6, 7], [6, 8]])
    pred = torch.tensor([1, 1, 1, 0, 2, 0])
    fig = viz.kept_by_class(images, labels, {"M": (keep, pred)}, ["a", "b", "c"], (7, 7),
                            per_row=3)
    axes = np.array(fig.axes[:6]).reshape(2, 3)
    # class 0's first image (index 1) is said to be b, class 1's (index 0) b
    assert axes[0, 0].get_title() == "a\n✗ b" and axes[0, 1].get_title() == "b\n✓"
    assert axes[0, 0].get_ylabel() == "M" and axes[1, 0].get_ylabel() == "M: kept"
    freq = axes[1, 0].images[-1].get_array()  # class 0: images 1 and 3 keep {0, 2} and {0, 5}
    expect = viz.keep_frequency(keep[labels == 0], 49).reshape(7, 7)
    assert np.allclose(np.asarray(freq), expect) and expect[0, 0] == 1.0 and expect[0, 2] == 0.5
    plt.close(fig)


def test_kept_by_class_puts_the_classes_in_blocks_and_hides_a_short_blocks_spare_panels():
    images = torch.zeros(4, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 3])
    keep = torch.tensor([[0], [1], [2], [3]])
    fig = viz.kept_by_class(images, labels, {"A": (keep, labels), "B": (keep, labels)},
                            ["w", "x", "y", "z"], (7, 7), per_row=3)
    panels = np.array(fig.axes[:24]).reshape(8, 3)  # 2 blocks x (2 image rows + 2 frequency rows)
    assert [ax.get_title() for ax in panels[0]] == ["w\n✓", "x\n✓", "y\n✓"]
    assert panels[4, 0].get_title() == "z\n✓" and panels[5, 0].get_title() == "✓"
    assert not any(ax.get_visible() for ax in panels[4:, 1:].flat)  # block 2 holds one class
    # class z keeps patch 3 in its one image
    assert np.asarray(panels[6, 0].images[-1].get_array()).reshape(-1)[3] == 1.0
    assert len(fig.axes) == 24 + 2  # a colour bar per block
    with pytest.raises(ValueError, match="per_row"):
        viz.kept_by_class(images, labels, {"A": (keep, labels)}, ["w", "x", "y", "z"], (7, 7),
                          per_row=5)
    plt.close(fig)


def _saved_px(fig) -> float:
    """The width of the figure's PNG as a notebook saves it (tight, with its padding)."""
    fig.canvas.draw()
    pad = 2 * plt.rcParams["savefig.pad_inches"]
    return (fig.get_tightbbox(fig.canvas.get_renderer()).width + pad) * fig.dpi


def test_chapter_5s_figure_helpers_are_legible_at_the_text_column():
    """mask_ratio_curves and kept_by_class at the sizes Chapter 5 draws them (five models; ten
    classes, two models): not shrunk by the page, no lettering under MIN_FONT_PX, no title over
    a panel or another title, and the keep frequencies with their colour bar, 0 to 100%."""
    r = np.linspace(0, 0.99, 12)
    names = ["ViT", "DynamicViT-style", "ViT+C", "RViT", "CViT"]
    top1 = {n: np.stack([80 - 50 * r - i, 82 - 50 * r - i]) for i, n in enumerate(names)}
    curves = viz.mask_ratio_curves(r, top1, {n: v + 10 for n, v in top1.items()},
                                   {n: np.array([0.5, 0.7]) for n in names}, mark=0.78,
                                   n_patches=49, mark_label="the paper's knee, 78%")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(30, 1, 28, 28, generator=g) * 2 - 1
    labels = torch.arange(10).repeat(3)
    keep = torch.stack([torch.randperm(49, generator=g)[:11] for _ in range(30)])
    wrong = (labels + 9) % 10  # the longest prediction titles: every image said to be another
    kept = viz.kept_by_class(images, labels, {"CViT": (keep, wrong), "pruner": (keep, labels)},
                             CLASS_NAMES, (7, 7), suptitle="Shaded: patches removed")
    for fig in (curves, kept):
        assert _saved_px(fig) <= viz.COLUMN_PX
        assert viz.smallest_font_px(fig) >= viz.MIN_FONT_PX
        assert viz.title_overlaps(fig) == []
    bars = [ax for ax in kept.axes if ax.get_ylabel() == "kept in (% of the class)"]
    assert len(bars) == 2  # one per block of five classes
    kept.canvas.draw()
    assert [t.get_text() for t in bars[0].get_yticklabels()][::2] == ["0%", "40%", "80%"]
    assert bars[0].get_ylim() == (0.0, 1.0)
    plt.close(curves)
    plt.close(kept)


def test_line_panel_draws_one_labelled_line_per_curve():
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 5)
    viz.line_panel(x, {"a": x ** 2, "b": torch.from_numpy(1 - x)}, ax, xlabel="w", ylabel="a",
                   title="t")
    lines = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines()}
    assert set(lines) == {"a", "b"} and np.allclose(lines["b"], 1 - x)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("w", "a", "t")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    plt.close(fig)


def test_knee_marker_takes_equal_knees_whose_mean_rounds_past_them():
    """Three equal knees of 0.1: their float mean is 0.10000000000000002, past the minimum."""
    k = np.array([0.1, 0.1, 0.1])
    assert k.mean() > k.min()
    fig, ax = plt.subplots()
    viz.knee_marker(np.linspace(0, 1, 11), np.linspace(100, 0, 11), k, ax)
    assert len(ax.lines) >= 1
    plt.close(fig)


def test_eval_panels_draw_the_seed_mean_per_setting_and_metric():
    rows = lambda offset: [{"step": s, "a": s + offset, "b": -s - offset} for s in (0, 10, 20)]  # noqa: E731
    fig, axes = plt.subplots(1, 2)
    viz.eval_panels({"two seeds": [rows(0), rows(2)], "one run": [rows(5)]}, ("a", "b"), axes,
                    ("A", "B"))
    for ax, sign in zip(axes, (1, -1)):
        lines = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines()}
        # a single run is not called "1 seeds"
        assert set(lines) == {"two seeds (2 seeds)", "one run"}
        # mean of offsets 0, 2
        assert np.allclose(lines["two seeds (2 seeds)"], sign * (np.array([0, 10, 20]) + 1))
        assert np.allclose(lines["one run"], sign * (np.array([0, 10, 20]) + 5))
        assert len(ax.collections) == 1  # the band of the two seeds only
    assert [ax.get_ylabel() for ax in axes] == ["A", "B"]
    plt.close(fig)


def test_eval_panels_align_seeds_on_the_steps_all_evaluated():
    """A run extended from its checkpoint evaluates once more where it was extended (Chapter 2's
    seed-0 CoMAEs at step 5,156): the mean is taken at the steps both seeds evaluated."""
    extended = [{"step": s, "a": float(s)} for s in (0, 10, 15, 20)]
    straight = [{"step": s, "a": float(s) + 2} for s in (0, 10, 20)]
    fig, ax = plt.subplots()
    viz.eval_panels({"pair": [extended, straight]}, ("a",), [ax])
    (line,) = ax.get_lines()
    assert np.allclose(line.get_xdata(), [0, 10, 20]) and np.allclose(line.get_ydata(),
                                                                     [1, 11, 21])
    with pytest.raises(ValueError, match="share no evaluated step"):
        viz.eval_panels({"apart": [extended[:1], straight[1:]]}, ("a",), [ax])
    plt.close(fig)


CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


def test_sample_grid_rows_are_the_classes_and_samples_keep_their_natural_size():
    labels = torch.arange(10).repeat(9)  # 9 images of each class, class c at 10 k + c
    images = (torch.arange(90.0) / 45 - 1).reshape(90, 1, 1, 1).expand(90, 1, 28, 28)
    fig = viz.sample_grid({"A": images, "B": -images, "C": images}, labels, CLASS_NAMES)
    a, b, c = fig.axes
    assert [t.get_text() for t in a.get_yticklabels()] == CLASS_NAMES
    assert not any(t.get_text() for t in b.get_yticklabels())  # names once per block row
    assert [t.get_text() for t in c.get_yticklabels()] == CLASS_NAMES
    assert [ax.get_title() for ax in fig.axes] == ["A", "B", "C"]
    tiles = np.ma.getdata(a.images[0].get_array())
    assert tiles.shape == (10 * 29 - 1, 8 * 29 - 1)  # at most 8 per class, 1 px between
    # row 3 (Dress), column 2: the third Dress image, index 10 * 2 + 3, shown as it is
    assert np.allclose(tiles[3 * 29:3 * 29 + 28, 2 * 29:2 * 29 + 28], images[23, 0].numpy())
    # each tick sits at the centre of its class's row
    assert np.allclose(a.get_yticks(), [r * 29 + 13.5 for r in range(10)])
    fig.canvas.draw()
    sample_css_px = a.get_window_extent().width / (8 * 29 - 1) * 28
    assert sample_css_px >= 28  # one image pixel at least one css pixel
    pad = 2 * plt.rcParams["savefig.pad_inches"] * fig.dpi
    assert fig.get_figwidth() * fig.dpi + pad <= viz.COLUMN_PX  # not shrunk by the page
    assert viz.smallest_font_px(fig) >= viz.MIN_FONT_PX
    plt.close(fig)


def test_sample_grid_refuses_more_than_8_per_class_and_bad_shapes():
    images = torch.zeros(20, 1, 28, 28)
    labels = torch.arange(20) % 10
    with pytest.raises(ValueError, match="at most 8"):
        viz.sample_grid({"A": images}, labels, CLASS_NAMES, per_class=10)
    with pytest.raises(ValueError, match=r"\(20, 1, H, W\)"):
        viz.sample_grid({"A": images[:5]}, labels, CLASS_NAMES)
    with pytest.raises(ValueError, match="column"):
        viz.sample_grid({"A": images, "B": images, "C": images}, labels, CLASS_NAMES, cols=3)


def test_title_overlaps_finds_titles_under_the_row_above_and_none_in_a_panel_grid():
    # The old layout of Chapter 3's collapse orders: square images and a suptitle in a figure
    # too short for them, so tight_layout pushes each second-row title into the panel above it.
    fig, axes = plt.subplots(2, 5, figsize=(11, 4.8))
    for k, ax in enumerate(axes.flat):
        viz.show_image(torch.zeros(1, 28, 28), ax, CLASS_NAMES[k])
    fig.suptitle("Collapse orders of one test image per class", y=1.0)
    fig.tight_layout()
    found = viz.title_overlaps(fig)
    assert {t for t, _ in found} == set(CLASS_NAMES[5:])
    assert ("Sandal", "T-shirt/top") in found
    plt.close(fig)
    fig, axes = viz.panel_grid(2, 5, suptitle="a title over the grid")
    for k, ax in enumerate(axes.flat):
        viz.show_image(torch.zeros(1, 28, 28), ax, CLASS_NAMES[k])
    assert viz.title_overlaps(fig) == []
    plt.close(fig)


def test_smallest_font_px_is_the_point_size_at_the_dpi_shrunk_by_the_page():
    fig, axes = viz.panel_grid(1, 2)
    axes[0, 0].set_title("nine points", fontsize=9)
    axes[0, 0].set_xticks([])
    axes[0, 0].set_yticks([])
    axes[0, 1].axis("off")
    assert viz.smallest_font_px(fig) == pytest.approx(9 * viz.DPI / 72)
    plt.close(fig)
    wide = plt.figure(figsize=(20, 2), dpi=viz.DPI)  # twice as wide as a page column, and more
    wide.text(0.0, 0.5, "x" * 5, fontsize=9)
    wide.text(0.95, 0.5, "y", fontsize=12)
    wide.canvas.draw()
    saved = (wide.get_tightbbox(wide.canvas.get_renderer()).width
             + 2 * plt.rcParams["savefig.pad_inches"]) * viz.DPI
    assert viz.smallest_font_px(wide) == pytest.approx(9 * viz.DPI / 72 * viz.COLUMN_PX / saved)
    assert viz.smallest_font_px(wide) < viz.MIN_FONT_PX
    plt.close(wide)


def test_draw_order_colours_early_patches_bright_and_writes_their_numbers():
    fig, axes = viz.panel_grid(1, 1, colorbar=True)
    order = torch.tensor([48, 0, 24] + [t for t in range(1, 48) if t != 24])
    viz.draw_order(order, (7, 7), axes[0, 0], numbers=3, fontsize=11)
    bar = viz.shared_colorbar(fig, axes, "position in the order")
    assert bar.ax.get_ylabel() == "position in the order"
    overlay = axes[0, 0].images[-1]
    positions = np.asarray(overlay.get_array()).reshape(-1)
    assert positions[48] == 1 and positions[0] == 2 and positions[24] == 3  # 1 = first
    assert sorted(positions) == list(range(1, 50))
    assert bar.mappable is overlay and bar.vmin == 1 and bar.vmax == 49

    def luminance(rgba):
        return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]

    assert luminance(overlay.to_rgba(1.0)) > luminance(overlay.to_rgba(49.0))  # bright = early
    texts = {t.get_text(): t for t in axes[0, 0].texts}
    assert set(texts) == {"1", "2", "3"} and texts["1"].get_fontsize() == 11
    assert texts["1"].get_position() == (6.0, 6.0)  # patch 48: row 6, column 6
    plt.close(fig)


def test_token_map_labels_its_colour_bar():
    fig, ax = plt.subplots()
    viz.token_map(np.arange(49.0), (7, 7), ax, colorbar="nats")
    bars = [a for a in fig.axes if a is not ax]
    assert len(bars) == 1 and bars[0].get_ylabel() == "nats"
    plt.close(fig)
