"""Who teaches the unlabelled images inside RD + FixMatch's term, and who is right: a diagnostic for the combined
method (issue 36, item 5).

Trains `rd` with `data.unlabelled=rest` and FixMatch's term inside (`consistency_weight`), and every `--every` steps
records on the batch:
  * the gradient norm each weighted loss term puts on the student's parameters (who moves the student);
  * on the batch's unlabelled images, peeking at their hidden labels (a diagnostic may; no method does): the
    accuracy of the reprogrammed branch's target, of the student's weak-view pseudo-label where it is confident
    (the share FixMatch's term trains on), and, where the two disagree, which one is right.

    python benchmarks/unlabelled_targets.py                          # BreastMNIST 10%, seed 0, 300 steps
    python benchmarks/unlabelled_targets.py data.source=medmnist:pneumoniamnist train.steps=600
    python benchmarks/unlabelled_targets.py method_options.rd.teacher_share=val   # the combined method

Prints one line per recorded step and the means over the second half of training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=int, default=10, help="record every this many steps")
    p.add_argument("--consistency-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=600")
    args = p.parse_args()
    from reprodistill.config import load_config
    from reprodistill.data.sources import UNLABELLED, load_data
    from reprodistill.engine.run import run
    from reprodistill.methods.rd import ReprogrammingDistillation

    cfg = load_config(
        "breast-bench",
        ["methods=[rd]", "data.unlabelled=rest", "data.fraction=0.1", f"train.seed={args.seed}",
         f"method_options.rd.consistency_weight={args.consistency_weight}", *args.overrides],
    )  # fmt: skip
    data = load_data(cfg.data)
    assert data.unlabelled is not None, "needs a limited-data run with data.unlabelled=rest"
    pool = data.unlabelled
    # the training split the engine builds: labelled items, then the unlabelled pool (features/run_features.py)
    truth = np.concatenate([data.train.labels, pool.full_train.labels[pool.unlabelled_index]])
    truth_t = torch.as_tensor(truth, dtype=torch.long)
    rows: list[dict[str, float]] = []
    calls = {"n": 0}
    original = ReprogrammingDistillation.forward

    def recording_forward(self: ReprogrammingDistillation, batch: dict) -> object:
        out = original(self, batch)
        if not self.training:
            return out
        calls["n"] += 1
        if calls["n"] % args.every:
            return out
        y, idx = batch["label"], batch["index"].cpu()
        assert bool((truth_t[idx][y != UNLABELLED] == y[y != UNLABELLED].cpu()).all()), "index order changed"
        params = [q for q in self.student.parameters() if q.requires_grad]
        row: dict[str, float] = {"step": calls["n"]}
        for name, part in out.parts.items():
            w = out.weights.get(name, 1.0)
            if w == 0 or not part.requires_grad:
                continue
            grads = torch.autograd.grad(w * part, params, retain_graph=True, allow_unused=True)
            row[f"grad_{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
        unl = (y == UNLABELLED).cpu()
        true = truth_t[idx][unl]
        with torch.no_grad():
            teacher = out.aux["teacher_logits"].detach().cpu()[unl].argmax(-1)
            p_student = out.logits.detach().cpu()[unl].float().softmax(-1)
        conf, pseudo = p_student.max(-1)
        confident = conf >= self.options.consistency_threshold
        row["teacher_acc"] = float((teacher == true).float().mean())
        row["student_acc"] = float((pseudo == true).float().mean())
        row["confident_share"] = float(confident.float().mean())
        row["pseudo_acc"] = float((pseudo[confident] == true[confident]).float().mean()) if confident.any() else np.nan
        both = confident & (teacher != pseudo)
        row["disagree_share"] = float(both.float().mean())
        row["disagree_teacher_right"] = float((teacher[both] == true[both]).float().mean()) if both.any() else np.nan
        if "teacher_share" in out.logged:  # rd teacher_share=val: the teacher's share of the unlabelled images
            row["teacher_share"] = out.logged["teacher_share"]
        rows.append(row)
        print("  ".join(f"{k} {v:.3f}" if k != "step" else f"step {int(v)}" for k, v in row.items()), flush=True)
        return out

    ReprogrammingDistillation.forward = recording_forward  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        result = run(cfg, run_dir=Path(tmp) / "run")
    late = rows[len(rows) // 2 :]
    print(f"\nmeans over the second half ({len(late)} records, steps {late[0]['step']:.0f}-{late[-1]['step']:.0f}):")
    for k in rows[0]:
        if k != "step":
            print(f"  {k:<24} {np.nanmean([r.get(k, np.nan) for r in late]):.3f}")
    r = result.results[0]
    print(f"student: val AUC {r.val.get('auc', float('nan')):.3f}, test AUC {r.test.get('auc', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
