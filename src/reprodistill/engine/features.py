"""Fixed-view teacher features, computed once per split: the frozen FM dominates cost, so never run it twice.

(In-memory for now; the fingerprinted on-disk cache builds on :func:`extract_features`.)
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from reprodistill.data.dataset import ImageDataset
from reprodistill.models.teacher import Teacher


@torch.inference_mode()
def extract_features(teacher: Teacher, dataset: ImageDataset, batch_size: int, device: torch.device,
                     desc: str = "teacher features", num_workers: int = 0) -> torch.Tensor:
    """Pooled teacher features [N, D] (float32, CPU) of every image of ``dataset`` in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out = torch.empty(len(dataset), teacher.feature_dim)
    pos = 0
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
        f = teacher.features(batch["image"].to(device)).cpu()
        out[pos: pos + len(f)] = f
        pos += len(f)
    return out
