"""A torch Dataset over one Split that yields raw uint8 images at the load size, so batches can be stacked and
each model (teacher or student) applies its own preprocessing to the batch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from reprodistill.data.image_files import load_image_file
from reprodistill.data.sources import Split


def _convert_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.shape[-1] == channels:
        return arr
    if channels == 3:  # grayscale -> RGB by repetition
        return np.repeat(arr, 3, axis=-1)
    # RGB -> grayscale with ITU-R 601 luma weights (what PIL's convert('L') uses)
    gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]


class ImageDataset(Dataset):
    """Items are dicts ``{'image': uint8 [C,H,W], 'label': int64, 'index': int64}``.

    Args:
        split: The split to serve.
        channels: Channels every image is converted to (1 or 3).
        size: (H, W) every image is resized to.
    """

    def __init__(self, split: Split, channels: int, size: tuple[int, int]) -> None:
        self.split = split
        self.channels = channels
        self.size = size

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 [H,W,C] at the dataset's size and channel count."""
        if self.split.paths is not None:
            return load_image_file(self.split.paths[i], self.channels, self.size, self.split.decoding)
        assert self.split.images is not None  # a split holds paths or images
        arr = self.split.images[i]
        if arr.shape[:2] != self.size:
            mode = "L" if arr.shape[-1] == 1 else "RGB"
            im = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
            arr = np.asarray(im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR))
            arr = arr[..., None] if arr.ndim == 2 else arr
        return _convert_channels(arr, self.channels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        arr = self.load(i)
        if not arr.flags.writeable or not arr.flags.c_contiguous:  # PIL hands out read-only buffers
            arr = np.ascontiguousarray(arr).copy()
        img = torch.from_numpy(arr).permute(2, 0, 1)
        return {"image": img, "label": torch.tensor(int(self.split.labels[i])), "index": torch.tensor(i)}
