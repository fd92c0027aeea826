"""Images from a folder tree (ImageNet's layout) as an indexable source of tensors.

torchvision's ``ImageFolder`` finds the images (``<root>/<class>/<image>``, classes sorted by
name, labels 0..K-1). Each image is resized so that its shorter side is ``size`` (bicubic, with
anti-aliasing) and center-cropped to ``size`` x ``size``, as MAR and ADM prepare ImageNet 256,
then scaled to [-1, 1]. ``images[idx]`` reads a batch (a tensor of indices or a slice) with a pool
of threads; ``images.labels`` are all labels at once (read from the file list, no image opened).

The random horizontal flip of training is not done here: the training steps flip images and their
collapse orders together (:func:`copkit.tokens.flip_batch`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torchvision import transforms
from torchvision.datasets import ImageFolder

__all__ = ["ImageFolderImages", "center_crop"]


def center_crop(size: int):
    """The transform: shorter side to ``size`` (bicubic, anti-aliased), center crop, [-1, 1]."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])


class ImageFolderImages:
    """The images under ``root`` (one folder per class), ``size`` x ``size``, RGB, in [-1, 1].

    Args:
        root: the folder of class folders (e.g. ``/data/imagenet/train``).
        size: the side of the center crop (the paper: 256).
        limit: keep only the first ``limit`` images (in ImageFolder's sorted order).
        workers: threads that decode a batch.
    """

    def __init__(self, root: str | Path, size: int = 256, limit: int | None = None,
                 workers: int = 8) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist: give the folder that "
                                    "holds one sub-folder of images per class (ImageNet's train/ "
                                    "or val/ layout)")
        try:
            self.dataset = ImageFolder(str(root), transform=center_crop(size))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{root}: {err} (expected "
                                    "<root>/<class>/<image>.JPEG)") from None
        self.size = size
        self.n = len(self.dataset) if limit is None else min(limit, len(self.dataset))
        self.labels = torch.tensor(self.dataset.targets[:self.n], dtype=torch.long)
        self.classes: list[str] = list(self.dataset.classes)
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def __len__(self) -> int:
        return self.n

    def _one(self, i: int) -> Tensor:
        return self.dataset[i][0]

    def __getitem__(self, idx: Tensor | slice | int) -> Tensor:
        if isinstance(idx, int):
            return self._one(range(self.n)[idx])
        indices = (range(self.n)[idx] if isinstance(idx, slice)
                   else [int(i) for i in torch.as_tensor(idx).flatten()])
        for i in indices:
            if not 0 <= i < self.n:
                raise IndexError(f"image {i} out of range: the folder holds {self.n}")
        return (torch.stack(list(self._pool.map(self._one, indices))) if len(indices)
                else torch.empty(0, 3, self.size, self.size))
