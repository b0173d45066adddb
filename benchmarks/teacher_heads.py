"""Can a better teacher come from the same frozen FM? Every teacher head of reprogram/teacher_heads.py (the probe,
self-training, label propagation, their ensemble, and the one validation chooses), fitted on cached FM features
only, with its validation and test AUC, per seed (issue 36, item 4).

    python benchmarks/teacher_heads.py                                      # BreastMNIST 10%, seeds 0-4
    python benchmarks/teacher_heads.py --preset pneumonia-bench --seeds 0 1 2
    python benchmarks/teacher_heads.py data.fraction=0.25

A head is a linear map of the FM's pooled features, so it costs only probe fits (seconds to a minute a seed after
the FM pass, which the feature cache keeps). Prints one line per seed and head, then each head's mean and its mean
difference from the probe with a 95% t-interval over the seeds.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="breast-bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.fraction=0.25")
    args = p.parse_args()
    from reprodistill.bench.stats import format_paired, interval
    from reprodistill.config import load_config
    from reprodistill.data.dataset import ImageDataset
    from reprodistill.data.sources import load_data
    from reprodistill.engine.loop import class_weights
    from reprodistill.features.fm_pass import FMPass
    from reprodistill.features.run_features import build_teacher, kind_features
    from reprodistill.reprogram.teacher_heads import CANDIDATES, Features, candidate_heads, fit_teacher_head
    from reprodistill.util.metrics import classification_metrics

    device = torch.device("cpu")
    teacher, table = None, {h: [] for h in (*CANDIDATES, "val")}
    for seed in args.seeds:
        cfg = load_config(args.preset, ["data.fraction=0.1", "data.unlabelled=rest", f"train.seed={seed}",
                                        f"data.subset_seed={seed}", *args.overrides])  # fmt: skip
        data = load_data(cfg.data)
        assert data.unlabelled is not None, "needs a limited-data run (data.fraction < 1)"
        teacher = teacher or build_teacher(cfg, device)
        sets = {s: ImageDataset(getattr(data, s), data.channels, data.load_size) for s in ("train", "val", "test")}
        fm = FMPass.from_config(teacher, cfg, device)
        f = kind_features(fm, sets, data, data.unlabelled, "pooled", cfg, {}, views=False).splits
        y = {s: torch.as_tensor(getattr(data, s).labels, dtype=torch.long) for s in ("train", "val", "test")}
        w = class_weights(data.train.labels, data.num_classes, cfg.train.class_weights)
        feats = Features(f["train"].float(), y["train"], f["unlabelled"].float(), (f["val"].float(), y["val"]))
        heads = candidate_heads(CANDIDATES, feats, data.num_classes, w)
        heads["val"] = fit_teacher_head("val", feats, data.num_classes, w)[0]
        for name, head in heads.items():
            with torch.no_grad():
                m = {s: classification_metrics(head(f[s].float()).log_softmax(-1).numpy(), y[s].numpy())
                     for s in ("val", "test")}  # fmt: skip
            table[name].append((m["val"]["auc"], m["test"]["auc"]))
            print(f"seed {seed} {name:>10}: val AUC {m['val']['auc']:.4f}  test AUC {m['test']['auc']:.4f}",
                  flush=True)  # fmt: skip
    print(f"\n{args.preset} {' '.join(args.overrides)}: mean over seeds {args.seeds}; test AUC minus the probe's")
    probe = np.array(table["probe"])
    for name, rows in table.items():
        a = np.array(rows)
        extra = "" if name == "probe" else f"  test - probe {format_paired(interval(a[:, 1] - probe[:, 1]))}"
        print(f"{name:>10}: val AUC {a[:, 0].mean():.4f}  test AUC {a[:, 1].mean():.4f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
