"""Animal-MNIST (PyPI ``animal-mnist``: 10,000 28x28 grey animal silhouettes, 10 classes of 1,000) as a
MedMNIST-style .npz (train / val / test, stratified, fixed seed), for checking methods on natural images far from
the FM's domain (a data set no default was tuned on).

    pip download animal-mnist --no-deps -d /tmp/animal && unzip -o /tmp/animal/*.whl -d /tmp/animal/x
    python benchmarks/animal_mnist_npz.py /tmp/animal/x/animal_mnist/data/Animal_MNIST /tmp/animalmnist.npz
    reprodistill bench -c breast-bench data.source=/tmp/animalmnist.npz name=animal-merlin-resnet18 \
        "methods=[student,fixmatch-unl,rd-unl,rd-unl-match]" "bench.seeds=[0]" "bench.fractions=[0.1]" \
        --dir results/animal-10-match

The package's own loader imports TensorFlow; this reads its two gzipped pickles directly.
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="the package's data/Animal_MNIST folder")
    p.add_argument("out", type=Path, help="the .npz to write")
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with gzip.open(args.folder / "animal_data_version_3.gz", "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(args.folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=np.int64)
    rng = np.random.default_rng(args.seed)
    k = int(labels.max()) + 1
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(k):  # stratified: each class split in the same proportions
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = args.val // k, args.test // k
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    out = {}
    for split, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        out[f"{split}_images"], out[f"{split}_labels"] = images[idx], labels[idx][:, None]
    np.savez_compressed(args.out, **out)
    print(f"{args.out}: " + ", ".join(f"{s} {len(out[f'{s}_labels'])}" for s in parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
