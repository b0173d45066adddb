"""FM feature-extraction throughput vs the FM's raw batched forward, measured in one run.

    python benchmarks/feature_extraction.py --images 400 --batch 50

Prints images/s of (a) the bare teacher forward on a pre-made tensor batch and (b) the full extraction path
(DataLoader, uint8 -> resize/normalise, forward, copy out), and their ratio (target >= 0.8).
"""

from __future__ import annotations

import argparse
import time

import torch

from reprodistill.config import DataConfig, TeacherConfig
from reprodistill.data import ImageDataset, load_data
from reprodistill.features.extract import extract_features
from reprodistill.models import create_teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="merlin")
    p.add_argument("--source", default="medmnist:pneumoniamnist")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch", type=int, default=50)
    args = p.parse_args()

    teacher = create_teacher(TeacherConfig(name=args.teacher))
    data = load_data(DataConfig(source=args.source))
    split = data.train.take(torch.arange(args.images).numpy())
    ds = ImageDataset(split, data.channels, data.load_size)
    x = torch.rand(args.batch, teacher.spec.channels, *teacher.spec.size)
    with torch.inference_mode():
        teacher(x[:2])  # warm-up
        t = time.perf_counter()
        for _ in range(max(1, args.images // args.batch)):
            teacher(x)
        raw = max(1, args.images // args.batch) * args.batch / (time.perf_counter() - t)
    t = time.perf_counter()
    extract_features(teacher, ds, args.batch, torch.device("cpu"))
    full = len(ds) / (time.perf_counter() - t)
    print(f"teacher {args.teacher} at {teacher.spec.size}, {torch.get_num_threads()} threads")
    print(f"raw batched forward : {raw:8.1f} img/s")
    print(f"feature extraction  : {full:8.1f} img/s")
    print(f"ratio               : {full / raw:8.2f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
