"""Tokenizers: images (B, C, H, W) in [-1, 1] <-> tokens (B, N, d) on a grid, row by row.

- :class:`PixelTokenizer`: p x p pixel patches (:func:`copkit.tokens.patchify`); the book's default.
- :class:`KLTokenizer`: the paper's tokenizer, the KL-regularised VAE with 16 latent channels at
  stride 16 that MAR uses (256 x 256 -> a 16 x 16 grid of 16-dim tokens), through diffusers'
  ``AutoencoderKL``. Latents are multiplied by 0.2325 as MAR does (and divided before decoding);
  training draws them from the VAE's posterior, as MAR trains, everything else takes its mode.
  :func:`load_kl16` reads its weights from a local safetensors file, in diffusers' key layout or
  in the original (LDM / MAR ``kl16.ckpt``) one, which is converted with diffusers' own converter.

MAR's ``kl16.ckpt`` is a pickle; this library never unpickles a checkpoint it loads. Convert it once
with ``python -m copkit convert-vae kl16.ckpt kl16.safetensors``, which reads it with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code) and writes
safetensors.

:class:`TokenSource` turns an indexable source of images into one of tokens, which is what the
training steps take, so the same step trains on a tensor of Fashion-MNIST patches or on ImageNet
images read from disk and encoded on the fly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from .dist import Shard
from .tokens import PATCH, patchify, unpatchify

__all__ = ["Tokenizer", "PixelTokenizer", "KLTokenizer", "KL16_CONFIG", "MAR_LATENT_SCALE",
           "kl16_vae", "load_kl16", "TokenSource", "make_tokenizer"]

#: MAR's latent scale for the KL-16 VAE (tokens = latents x 0.2325).
MAR_LATENT_SCALE = 0.2325

#: The layout of MAR's KL-16 VAE (LDM's AutoencoderKL with ch 128, ch_mult (1, 1, 2, 2, 4), two
#: residual blocks per level, attention only in the middle, 16 latent channels) in diffusers' terms.
KL16_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 5,
    "up_block_types": ["UpDecoderBlock2D"] * 5,
    "block_out_channels": [128, 128, 256, 256, 512],
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 256,
}


class Tokenizer(Protocol):
    """What the stages need of a tokenizer."""

    stride: int  #: pixels per token along each side
    token_dim: int

    def encode(self, images: Tensor, generator: torch.Generator | None = None,
               shard: Shard | None = None) -> Tensor:
        """Images -> tokens (B, N, d). A tokenizer that draws (the KL-16 VAE's posterior sample)
        draws from ``generator``, for the whole global batch of a ``shard``; without a generator
        the tokens are deterministic."""
        ...

    def decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor: ...


class PixelTokenizer:
    """p x p pixel patches of C-channel images as tokens of dimension C p p.

    >>> t = PixelTokenizer(patch=4, channels=1)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> t.encode(x).shape, torch.equal(t.decode(t.encode(x), (7, 7)), x)
    (torch.Size([2, 49, 16]), True)
    """

    def __init__(self, patch: int = PATCH, channels: int = 1) -> None:
        self.stride = patch
        self.channels = channels
        self.token_dim = channels * patch * patch

    def encode(self, images: Tensor, generator: torch.Generator | None = None,
               shard: Shard | None = None) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, N, d), :math:`N = H W / p^2` and :math:`d = C p^2`
        (nothing is drawn)."""
        return patchify(images, self.stride)

    def decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Tokens on a ``grid`` of (h, w) patches -> images (B, C, h p, w p)."""
        return unpatchify(tokens, self.stride,
                          (self.channels, grid[0] * self.stride, grid[1] * self.stride))


class KLTokenizer:
    """A diffusers ``AutoencoderKL`` as a tokenizer: the latent (B, c, h, w) times ``scale`` is the
    grid of h w tokens of dimension c (row by row, as :func:`copkit.tokens.patchify` orders them).

    ``encode`` draws from the VAE's posterior when given a generator (the training step's: MAR
    trains on ``posterior.sample() * 0.2325``, engine_mar.py), and takes its mode (the mean)
    without one (CoMAE, the collapse orders, anything that must be deterministic).
    """

    def __init__(self, vae: nn.Module, scale: float = MAR_LATENT_SCALE) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.scale = scale
        self.token_dim = int(vae.config.latent_channels)
        self.stride = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None,
               shard: Shard | None = None) -> Tensor:
        r"""Images (B, 3, H, W) in [-1, 1] -> tokens (B, H W / 256, c), row by row: ``scale`` times
        the posterior's mode, or with a ``generator`` times a draw :math:`\mu + \sigma\,\epsilon`
        from it. With a ``shard`` (:class:`copkit.dist.Shard`) the images are this process's rows of
        a global batch and :math:`\epsilon` is drawn for the whole global batch and cut, as one
        process would draw it.

        The VAE runs in float32 even inside a training step's bfloat16 autocast: MAR encodes
        outside its autocast (engine_mar.py, main_cache.py)."""
        with torch.autocast(images.device.type, enabled=False):
            dist = self.vae.encode(images.float()).latent_dist
        mean = dist.mean.flatten(2).transpose(1, 2)
        if generator is None:
            return mean * self.scale
        shard = shard or Shard.whole(len(images))
        eps = torch.randn((shard.total, *mean.shape[1:]), generator=generator, device=mean.device,
                          dtype=mean.dtype)
        return (mean + dist.std.flatten(2).transpose(1, 2) * shard.cut(eps)) * self.scale

    @torch.no_grad()
    def decode(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Tokens (B, h w, c) on a ``grid`` of (h, w) -> images (B, 3, 16 h, 16 w) from the VAE's
        decoder."""
        b, n, c = tokens.shape
        z = tokens.transpose(1, 2).reshape(b, c, *grid) / self.scale
        return self.vae.decode(z).sample


def kl16_vae(config: dict[str, Any] | None = None) -> nn.Module:
    """An untrained ``AutoencoderKL`` with MAR's KL-16 layout (or ``config``, the same keys)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:
        raise ImportError("the KL-16 tokenizer needs diffusers: pip install 'copkit[paper]' (or "
                          "diffusers)") from err
    return AutoencoderKL(**(config or KL16_CONFIG))


def _is_original_layout(keys: list[str]) -> bool:
    """LDM's names (``encoder.down.0...``, ``decoder.mid.block_1...``), maybe under a prefix."""
    return any(re.search(r"(^|\.)(encoder|decoder)\.(down|up|mid)\.", k) for k in keys)


def load_kl16(path: str | Path, config: dict[str, Any] | None = None,
              device: torch.device | str = "cpu") -> nn.Module:
    """MAR's KL-16 VAE (or one of layout ``config``) with the weights in the safetensors file
    ``path``.

    Keys in the original layout (``encoder.down.0.block.0...``, optionally under
    ``first_stage_model.`` or ``vae.``) are converted with diffusers'
    ``convert_ldm_vae_checkpoint``; diffusers' own layout loads as it is. Every weight of the model
    must be filled and every key of the file used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no VAE weights at {path}: give the path of MAR's KL-16 VAE as "
                                "safetensors (convert kl16.ckpt once with: python -m copkit "
                                "convert-vae kl16.ckpt kl16.safetensors)")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: VAE weights are read from .safetensors only (never unpickled); "
                         f"convert it with python -m copkit convert-vae {path} "
                         f"{path.with_suffix('.safetensors')}")
    config = dict(config or KL16_CONFIG)
    state = load_file(str(path))
    if _is_original_layout(list(state)):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, config)
    vae = kl16_vae(config)
    try:
        missing, unexpected = vae.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a weight of another shape
        raise ValueError(f"{path} does not fit the VAE layout: "
                         f"{str(err).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the VAE layout: {len(missing)} weights missing "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. "
                         f"{unexpected[:3]})")
    return vae.to(device).eval()


def make_tokenizer(kind: str, patch: int = PATCH, channels: int = 1, vae: str | None = None,
                   scale: float = MAR_LATENT_SCALE,
                   device: torch.device | str = "cpu") -> Tokenizer:
    """``"pixels"`` (p x p patches) or ``"kl16"`` (MAR's VAE from the file ``vae``)."""
    if kind == "pixels":
        return PixelTokenizer(patch, channels)
    if kind == "kl16":
        if not vae:
            raise ValueError("tokenizer 'kl16' needs the path of the VAE weights (tokenizer.vae in "
                             "the config)")
        return KLTokenizer(load_kl16(vae, device=device), scale)
    raise ValueError(f"unknown tokenizer {kind!r}; use 'pixels' or 'kl16'")


class TokenSource:
    """Images -> tokens on demand: ``source[idx]`` encodes ``images[idx]`` (a tensor of indices or
    a slice) on ``device``. ``len`` is the number of images."""

    def __init__(self, images: Any, tokenizer: Tokenizer,
                 device: torch.device | str = "cpu") -> None:
        self.images, self.tokenizer, self.device = images, tokenizer, torch.device(device)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: Tensor | slice) -> Tensor:
        return self.tokenizer.encode(self.images[idx].to(self.device))

    def to(self, device: torch.device | str) -> "TokenSource":
        """Batches are encoded on ``device`` from now on (the source itself stays where it is)."""
        self.device = torch.device(device)
        return self
