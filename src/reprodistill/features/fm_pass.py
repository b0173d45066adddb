"""Every pass of the frozen FM over a whole data set goes through :class:`FMPass`: one batch size
(``teacher.batch_size``), the run's device and loader workers, a progress bar, and the on-disk feature cache.

The engine's fixed-view features, the probes' online fallback, LoRA's trunk cache, TDMR's stage 1 and the visual
prompt's label mapping all use it, so a GPU user bounds FM memory with one setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reprodistill.config import RunConfig
from reprodistill.data.dataset import ImageDataset
from reprodistill.features.cache import cached_features
from reprodistill.features.extract import ImageItems, extract_features
from reprodistill.models.teacher import Teacher

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FMPass:
    """How the frozen ``teacher`` runs over data sets: batch size, device, loader workers and feature cache."""

    teacher: Teacher
    device: torch.device
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: Optional[str] = None  # the teacher.cache_dir setting ('auto', a folder, or None = off)

    @classmethod
    def from_config(cls, teacher: Teacher, cfg: RunConfig, device: torch.device) -> FMPass:
        return cls(teacher, device, cfg.teacher.batch_size, cfg.train.num_workers, cfg.teacher.cache_dir)

    def features(
        self, dataset: ImageItems, kind: str = "pooled", desc: str = "", fn: Optional[FeatureFn] = None
    ) -> torch.Tensor:
        """FM outputs of every image of ``dataset`` in order (float32, CPU): ``kind`` 'pooled' or 'map', or any
        function ``fn`` of a uint8 image batch (e.g. a prompted FM's logits; ``kind`` then only names it)."""
        return extract_features(
            self.teacher,
            dataset,
            self.batch_size,
            self.device,
            kind=kind,
            desc=desc or f"{self.teacher.name} {kind}",
            num_workers=self.num_workers,
            fn=fn,
        )

    def cached(
        self,
        dataset: ImageDataset,
        kind: str = "pooled",
        name: str = "",
        fn: Optional[FeatureFn] = None,
        timings: Optional[dict[str, float]] = None,
        view: str = "fixed",
        source: Optional[ImageItems] = None,
        desc: str = "",
    ) -> torch.Tensor:
        """:meth:`features` through the on-disk cache (fp16), keyed by FM, ``dataset``, ``kind`` and ``view``.

        ``kind`` must name ``fn`` uniquely when ``fn`` is given (it is part of the key). ``source`` is what the FM
        actually sees when it differs from the keyed dataset (an augmented view of it). ``timings[name]`` gets the
        pass's seconds, measured now or when the entry was made.
        """
        return cached_features(
            self.teacher,
            dataset,
            self.cache_dir,
            kind=kind,
            name=name,
            timings=timings,
            view=view,
            compute=lambda: self.features(
                dataset if source is None else source, kind, desc or f"{self.teacher.name} {kind} {name}".rstrip(), fn
            ),
        )
