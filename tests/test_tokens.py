import pytest
import torch

from copkit.tokens import (
    PLACES,
    flip_order,
    grid_coords,
    hflip_index,
    object_patches,
    order_places_text,
    patch_places,
    patchify,
    random_orders,
    unpatchify,
)


@pytest.mark.parametrize("seed", range(8))
def test_patchify_round_trip_random_shapes(seed):
    g = torch.Generator().manual_seed(seed)
    p = int(torch.randint(1, 6, (1,), generator=g))
    c = int(torch.randint(1, 4, (1,), generator=g))
    gh, gw = (int(v) for v in torch.randint(1, 7, (2,), generator=g))
    x = torch.randn(3, c, gh * p, gw * p, generator=g)
    t = patchify(x, p)
    assert t.shape == (3, gh * gw, c * p * p)
    assert torch.equal(unpatchify(t, p, (c, gh * p, gw * p)), x)
    # unbatched input gives the same tokens as a batch of one
    assert torch.equal(patchify(x[1], p), t[1])


def test_patchify_token_holds_the_right_pixels():
    # Independent truth: slice the patch at grid position (r, c) by hand.
    x = torch.randn(2, 3, 12, 8)
    p, gw = 4, 2
    t = patchify(x, p)
    for n in range(6):
        r, c = divmod(n, gw)
        assert torch.equal(t[:, n], x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(2, -1))


def test_patchify_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by the patch size p=4"):
        patchify(torch.zeros(1, 1, 28, 30), 4)
    with pytest.raises(ValueError, match="do not fit image shape"):
        unpatchify(torch.zeros(49, 16), 4, (1, 28, 32))


def test_grid_coords_raster_order():
    rc = grid_coords(3, 4)
    assert rc.shape == (12, 2)
    assert rc[5].tolist() == [1, 1]
    assert torch.equal(rc[:, 0] * 4 + rc[:, 1], torch.arange(12))


def test_flip_order_follows_the_image():
    # A planted image whose brightest patch is unique: after flipping the image, the patch that
    # the flipped order puts first must hold the same (mirrored) content.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 8, 12, generator=g)
    p, gw = 4, 3
    t = patchify(x, p)
    order = torch.argsort(t.sum(-1), descending=True)  # brightest first
    xf = torch.flip(x, dims=[-1])
    tf = patchify(xf, p)
    flipped = flip_order(order, gw)
    assert torch.equal(flipped, torch.argsort(tf.sum(-1), descending=True))
    assert torch.allclose(tf[flipped[0]].sum(), t[order[0]].sum())
    # batched, and an involution
    orders = random_orders(5, 6, seed=1)
    assert torch.equal(flip_order(flip_order(orders, gw), gw), orders)
    assert torch.equal(hflip_index(6, 3), torch.tensor([2, 1, 0, 5, 4, 3]))


def test_random_orders_are_permutations():
    o = random_orders(20, 49, seed=3)
    assert torch.equal(o.sort(1).values, torch.arange(49).expand(20, 49))
    assert not torch.equal(o[0], o[1])
    assert torch.equal(o, random_orders(20, 49, seed=3))



def test_centre_out_order_is_sorted_by_distance_from_the_centre():
    from copkit.tokens import centre_out_order

    for grid in ((7, 7), (4, 4), (3, 5)):
        order = centre_out_order(grid)
        h, w = grid
        assert sorted(order.tolist()) == list(range(h * w))  # a permutation
        dist = [((i // w - (h - 1) / 2) ** 2 + (i % w - (w - 1) / 2) ** 2) for i in order.tolist()]
        assert dist == sorted(dist)  # nearest first, brute force over every token
    assert centre_out_order((7, 7))[0] == 24  # the middle patch of the 7x7 grid
    # the four middle patches of an even grid
    assert set(centre_out_order((4, 4))[:4].tolist()) == {5, 6, 9, 10}


def test_object_patches_mark_the_patches_with_a_pixel_above_the_level():
    """Planted: a 28 x 28 black image with one bright pixel in patches 0 and 48 (its corners), a
    pixel exactly at the level in patch 24 (not above it), and a dim one just above it in patch
    9."""
    img = -torch.ones(2, 1, 28, 28)
    img[0, 0, 0, 3] = 1.0  # patch 0
    img[0, 0, 27, 27] = 0.5  # patch 48
    img[0, 0, 13, 13] = -0.8  # patch 24: at the level, not above
    img[0, 0, 5, 9] = -0.79  # patch (1, 2): 9
    got = object_patches(img)
    assert got.shape == (2, 49) and got.dtype == torch.bool
    assert got[0].nonzero().flatten().tolist() == [0, 9, 48]
    assert not got[1].any()  # an all-black image has no object
    assert object_patches(img, level=0.9)[0].nonzero().flatten().tolist() == [0]


def _garment() -> torch.Tensor:
    """A 28 x 28 image whose object is the 5 x 5 block of patches in rows and columns 1-5 (the
    border ring of the 7 x 7 grid is background): patches inside it are rows/columns 2-4."""
    img = -torch.ones(1, 1, 28, 28)
    img[0, 0, 4:24, 4:24] = 0.5
    return img


def test_patch_places_by_brute_force_over_the_grid():
    places = patch_places(_garment())[0].reshape(7, 7)
    for r in range(7):
        for c in range(7):
            on = 1 <= r <= 5 and 1 <= c <= 5
            inside = 2 <= r <= 4 and 2 <= c <= 4
            assert places[r, c] == (2 if inside else 1 if on else 0), (r, c)
    full = patch_places(torch.zeros(1, 1, 28, 28))[0].reshape(7, 7)  # an object filling the image
    # the border is an edge
    assert (full[1:-1, 1:-1] == 2).all() and (full[0] == 1).all() and (full[:, -1] == 1).all()
    assert PLACES[0] == "background" and PLACES[2] == "inside"


def test_order_places_text_says_where_orders_start_from_the_counts():
    """Chapter 1 said the greedy order "starts inside the garment" while some orders start on
    the silhouette's edge or the background: the sentence is now written from where they start."""
    img = _garment().repeat(3, 1, 1, 1)
    inside_first = [24] + [i for i in range(49) if i != 24]          # the centre: inside
    # (1, 1): the block's corner, an edge
    edge_first = [8] + [i for i in range(49) if i != 8]
    background_first = [0] + [i for i in range(49) if i != 0]        # (0, 0): the background
    text = order_places_text(torch.tensor([inside_first, edge_first, background_first]), img, k=1,
                             words=("on the background", "on its edge", "inside the garment"),
                             what="classes")
    assert text.startswith("The first patch lies inside the garment for 1 of 3 classes, on its "
                           "edge for 1 and on the background for 1;")
    every_inside = torch.tensor([inside_first] * 3)
    assert order_places_text(every_inside, img, k=1).startswith("The first patch lies inside the "
                                                                "object for 3 of 3 orders;")
    text = order_places_text(every_inside, img, k=9)
    # first 9 of each: the centre (inside), then patches 0-7 (row 0 and (1, 0): background);
    # last 9: 40 = (5, 5) (an edge), 41 and row 6 (background)
    assert text.endswith("of their first 9 patches (27 in all): 3 inside the object, 0 on its edge "
                         "and 24 on the background; of their last 9: 0 inside the object, 3 on its "
                         "edge and 24 on the background.")
    with pytest.raises(ValueError, match="one order per image"):
        order_places_text(every_inside[:2], img)
