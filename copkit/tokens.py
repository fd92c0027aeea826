"""Images to patch tokens and back.

An image of shape (C, H, W) is cut into non-overlapping p x p patches on an (H/p) x (W/p) grid,
read in raster order (row by row), and each patch is flattened channel-first into a token of
dimension :math:`d = C p^2`. With the book's default (28 x 28 Fashion-MNIST, p = 4) this gives
N = 49 tokens of d = 16, the same token size as the KL-16 VAE latents the paper works with (Sec. 3).
The flattening follows MAR's ``patchify`` (channel, then patch row, then patch column).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data import SIDE

__all__ = ["PATCH", "SIDE", "GRID", "N_TOKENS", "TOKEN_DIM", "gather_tokens", "patchify",
           "unpatchify", "grid_shape", "grid_coords", "flip_order", "hflip_index", "random_orders",
           "centre_out_order", "object_patches", "PLACES", "patch_places", "order_places_text",
           "flip_batch", "random_flip"]


#: The book's tokens, 28 x 28 Fashion-MNIST images cut into 4 x 4 patches, a 7 x 7 grid of
#: N = 49 tokens of d = 16 pixels. Every chapter and profile uses these; the command line's
#: tokenizer (:mod:`copkit.tokenizer`) takes other sizes for other data.
PATCH = 4
GRID = SIDE // PATCH
N_TOKENS = GRID * GRID
TOKEN_DIM = PATCH * PATCH


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """The tokens (B, N, d) at per-image positions ``index`` (B, L): (B, L, d), row b holding
    ``tokens[b, index[b]]``.

    >>> t = torch.arange(12.).reshape(1, 4, 3)
    >>> gather_tokens(t, torch.tensor([[2, 0]])).tolist()
    [[[6.0, 7.0, 8.0], [0.0, 1.0, 2.0]]]
    """
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

def _check_divisible(h: int, w: int, p: int) -> None:
    if p <= 0:
        raise ValueError(f"patch size must be a positive integer, got p={p}")
    if h % p or w % p:
        raise ValueError(
            f"image size {h}x{w} is not divisible by the patch size p={p}; "
            f"crop or pad the image to a multiple of {p} (e.g. {h - h % p}x{w - w % p})"
        )


def grid_shape(h: int, w: int, p: int) -> tuple[int, int]:
    """The token grid (rows, cols) of an h x w image cut into p x p patches."""
    _check_divisible(h, w, p)
    return h // p, w // p


def patchify(images: Tensor, p: int) -> Tensor:
    """Cut images into flattened p x p patch tokens.

    Args:
        images: (C, H, W) or (B, C, H, W); H and W divisible by ``p``.
        p: patch size in pixels.

    Returns:
        (N, d) or (B, N, d) with :math:`N = (H/p)(W/p)` in raster order and :math:`d = C p^2`.

    Example:
        >>> x = torch.arange(2 * 1 * 4 * 4.).reshape(2, 1, 4, 4)
        >>> patchify(x, 2).shape
        torch.Size([2, 4, 4])
        >>> patchify(x, 2)[0, 1].tolist()   # top-right patch of the first image
        [2.0, 3.0, 6.0, 7.0]
        >>> torch.equal(unpatchify(patchify(x, 2), 2, (1, 4, 4)), x)
        True
    """
    single = images.dim() == 3
    if single:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError("expected images of shape (C, H, W) or (B, C, H, W), got "
                         f"{tuple(images.shape)}")
    b, c, h, w = images.shape
    gh, gw = grid_shape(h, w, p)
    x = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
    tokens = x.reshape(b, gh * gw, c * p * p)
    return tokens[0] if single else tokens


def unpatchify(tokens: Tensor, p: int, shape: tuple[int, int, int]) -> Tensor:
    """Inverse of :func:`patchify`: (N, d) or (B, N, d) tokens back to (C, H, W) or (B, C, H, W).

    >>> x = torch.randn(2, 1, 28, 28)
    >>> torch.equal(unpatchify(patchify(x, 4), 4, (1, 28, 28)), x)
    True
    """
    single = tokens.dim() == 2
    if single:
        tokens = tokens.unsqueeze(0)
    c, h, w = shape
    gh, gw = grid_shape(h, w, p)
    b, n, d = tokens.shape
    if n != gh * gw or d != c * p * p:
        raise ValueError(
            f"tokens of shape (N={n}, d={d}) do not fit image shape {tuple(shape)} with p={p}: "
            f"expected N={gh * gw}, d={c * p * p}"
        )
    x = tokens.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
    images = x.reshape(b, c, h, w)
    return images[0] if single else images


def grid_coords(h: int, w: int) -> Tensor:
    """(row, col) of each of the h*w tokens of an h x w grid, in raster order: a (h*w, 2) long
    tensor."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def hflip_index(n_tokens: int, grid_w: int, device: torch.device | str | None = None) -> Tensor:
    """Where each token index lands when the image is flipped left-right: (N,) long tensor on
    ``device``.

    Token n at (row, col) moves to (row, grid_w - 1 - col). The map is its own inverse.
    """
    if n_tokens % grid_w:
        raise ValueError(f"{n_tokens} tokens do not fill whole rows of width {grid_w}")
    idx = torch.arange(n_tokens, device=device)
    col = idx % grid_w
    return idx - col + (grid_w - 1 - col)


def flip_order(order: Tensor, grid_w: int) -> Tensor:
    """The order of a horizontally flipped image, given the order of the original.

    ``order[..., k]`` is the token index visited k-th; the result visits the same patches (now at
    their mirrored positions) in the same sequence, so a model trained with random flips keeps the
    collapse order attached to the content. Works on (N,) or (B, N) index tensors.

    Example:
        >>> flip_order(torch.tensor([0, 1, 2, 3]), grid_w=2).tolist()
        [1, 0, 3, 2]
    """
    return hflip_index(order.shape[-1], grid_w, order.device)[order]


def random_orders(n: int, n_tokens: int, seed: int = 0,
                  generator: torch.Generator | None = None) -> Tensor:
    """``n`` independent uniformly random orders of ``n_tokens`` tokens: a (n, n_tokens) long
    tensor (MAR's orders), drawn from ``generator`` (on its device) or else a CPU one seeded by
    ``seed``."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(n, n_tokens, generator=g, device=g.device), dim=1)


def centre_out_order(grid: tuple[int, int]) -> Tensor:
    """One fixed order of the tokens of an ``(h, w)`` grid: by Euclidean distance of each patch's
    centre from the image's centre, nearest first, ties in raster order. The content-blind order
    that a learned order of centred objects (Fashion-MNIST) has to beat.

    >>> centre_out_order((3, 3)).tolist()
    [4, 1, 3, 5, 7, 0, 2, 6, 8]
    """
    h, w = grid
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    d = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    return torch.argsort(d.reshape(-1), stable=True)


def object_patches(images: Tensor, p: int = PATCH, level: float = -0.8) -> Tensor:
    """Which patches of images in [-1, 1] lie on the object: a (B, N) bool tensor, True where a
    patch holds any pixel brighter than ``level`` (-0.8 is 10% grey: Fashion-MNIST's items on
    their black background). A random order's first k patches hold, on average, this mask's mean
    share of object patches: the reference for the object share of an order's top.

    >>> img = -torch.ones(1, 1, 8, 8); img[0, 0, 5, 1] = 0.0
    >>> object_patches(img, 4).tolist()
    [[False, False, True, False]]
    """
    return (patchify(images, p) > level).any(-1)


#: The places :func:`patch_places` tells apart, by their code: 0, 1, 2.
PLACES = ("background", "edge", "inside")


def patch_places(images: Tensor, p: int = PATCH, level: float = -0.8) -> Tensor:
    """Where each patch lies with respect to the object (:func:`object_patches`), a (B, N) long
    tensor of codes into :data:`PLACES`: 0 on the background (no pixel above ``level``), 1 on
    the object's edge (an object patch with a background patch, or the image's border, among its
    four neighbours), 2 inside the object (all four neighbours on it too).

    >>> img = -torch.ones(1, 1, 12, 12); img[0, 0, :, :9] = 0.0   # the object fills the left 9 columns
    >>> patch_places(img, 3).reshape(4, 4).tolist()
    [[1, 1, 1, 0], [1, 2, 1, 0], [1, 2, 1, 0], [1, 1, 1, 0]]
    """
    if images.ndim == 3:
        images = images[None]
    gh, gw = grid_shape(images.shape[-2], images.shape[-1], p)
    on = object_patches(images, p, level).reshape(-1, gh, gw)
    # beyond the border: not the object
    padded = torch.nn.functional.pad(on, (1, 1, 1, 1), value=False)
    neighbours = torch.stack([padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                              padded[:, 1:-1, 2:]])
    inside = on & neighbours.all(0)
    return (on.long() + inside.long()).reshape(on.shape[0], -1)


def order_places_text(orders: Tensor, images: Tensor, k: int = 8, p: int = PATCH,
                      level: float = -0.8, words: tuple[str, str, str] = ("on the "
                                                                          "background",
                                                                          "on its edge",
                                                                          "inside the object"),
                      what: str = "orders") -> str:
    """Where orders start and end, as a sentence written from the counts: for each order
    ``orders[i]`` (a permutation of the N patches) on its image ``images[i]``, the place
    (:func:`patch_places`) of its first patch, of its first ``k`` and of its last ``k``.
    ``words`` name the three places (background, edge, inside).

    >>> img = -torch.ones(2, 1, 12, 12); img[:, 0, :, :9] = 0.0
    >>> order_places_text(torch.tensor([list(range(16)), [5] + [i for i in range(16) if i != 5]]), img, k=2, p=3)
    'The first patch lies inside the object for 1 of 2 orders and on its edge for 1; of their first 2 patches (4 in all): 1 inside the object, 3 on its edge and 0 on the background; of their last 2: 0 inside the object, 2 on its edge and 2 on the background.'
    """
    from .fmt import count, listing, tally

    orders = torch.as_tensor(orders)
    if orders.ndim != 2 or orders.shape[0] != images.shape[0]:
        raise ValueError(f"need one order per image, got orders {tuple(orders.shape)} and images "
                         f"{tuple(images.shape)}")
    if not 1 <= k <= orders.shape[1]:
        raise ValueError(f"k must be in 1..{orders.shape[1]}, got {k}")
    places = torch.gather(patch_places(images, p, level), 1, orders.long())

    def counts(codes: Tensor) -> list[tuple[str, int]]:  # inside, edge, background
        return [(words[c], int((codes == c).sum())) for c in (2, 1, 0)]

    n = orders.shape[0]
    first = [(w, c) for w, c in counts(places[:, 0]) if c]
    head = listing(f"{w} for {count(c)}" + (f" of {count(n)} {what}" if i == 0 else "")
                   for i, (w, c) in enumerate(first))
    return (f"The first patch lies {head}; of their first {k} patches ({count(n * k)} in all): "
            f"{tally(counts(places[:, :k]), zeros=True)}; of their last {k}: "
            f"{tally(counts(places[:, -k:]), zeros=True)}.")


def flip_batch(images: Tensor, orders: Tensor | None, flip: Tensor,
               p: int = 4) -> tuple[Tensor, Tensor | None]:
    """Mirror the images (B, C, H, W) where ``flip`` (B,) is true, and map their orders (B, N) of
    p x p patch tokens with :func:`flip_order`, so that each order stays on the same content.

    >>> x = torch.arange(64.0).reshape(1, 1, 8, 8)
    >>> fx, fo = flip_batch(x, torch.tensor([[0, 1, 2, 3]]), torch.tensor([True]))
    >>> fo.tolist()  # a 2x2 grid of 4x4 patches: patch 0 (top left) is now patch 1 (top right)
    [[1, 0, 3, 2]]
    """
    flip = flip.to(images.device)
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if orders is not None:
        orders = torch.where(flip[:, None], flip_order(orders, images.shape[-1] // p), orders)
    return images, orders


def random_flip(images: Tensor, orders: Tensor | None, generator: torch.Generator | None,
                p: int = 4) -> tuple[Tensor, Tensor | None]:
    """The training augmentation of CMAR and CViT: each image mirrored with probability 1/2 (drawn
    from ``generator``, on its device), its order flipped alongside (:func:`flip_batch`)."""
    device = generator.device if generator is not None else images.device
    flip = torch.rand(images.shape[0], generator=generator, device=device) < 0.5
    return flip_batch(images, orders, flip, p)
