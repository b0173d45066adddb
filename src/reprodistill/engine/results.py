"""What a run reports for each method: one :class:`MethodResult` definition, from which the result files' columns,
the bench rows and the printed table are all derived."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from reprodistill.engine.profile import LATENCY_RULE
from reprodistill.engine.sanity import flag_text
from reprodistill.util.metrics import SCALAR_METRICS


@dataclass
class MethodResult:
    method: str
    test: dict[str, Any]
    best_epoch: int
    train_time_s: float
    params: int
    gflops: float
    latency_ms: float
    peak_rss_mb: float
    # seconds of the FM pass over train+val that this method's cached features cost (0 for the student alone)
    fm_feature_s: float = 0.0
    # seconds of the method's own work before training (a probe fit, TDMR's stage 1, LoRA's trunk pass, the
    # training of a co-teacher it distils), counted as when first done even if this run loaded its stored result
    prepare_s: float = 0.0
    # validation metrics of the reported checkpoint (the split that chose it; 'loss' is the class-weighted CE), and
    # under 'extra' the AUC and balanced accuracy of the method's non-deployed branches (the teacher it distils)
    val: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodResult:
        """A stored ``result.json`` (keys added later take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def transfer_s(self) -> float:
        """The method's whole transfer cost: its training, the FM pass its cached features needed, its preparation."""
        return self.train_time_s + self.fm_feature_s + self.prepare_s

    def row(self) -> dict[str, Any]:
        """The flat result row (the columns of ``results.csv``, :data:`RESULT_COLUMNS`)."""
        return {
            "method": self.method,
            **{k: self.test[k] for k in SCALAR_METRICS},
            "flags": flag_text(self.test["confusion_matrix"]),  # one-class predictions: a bug, not a result
            "val_loss": self.val.get("loss", float("nan")),
            **{f"val_{k}": self.val.get(k, float("nan")) for k in SCALAR_METRICS},
            "best_epoch": self.best_epoch,
            "train_time_s": round(self.train_time_s, 2),
            "fm_feature_s": round(self.fm_feature_s, 2),
            "prepare_s": round(self.prepare_s, 2),
            "transfer_s": round(self.transfer_s, 2),
            "params": self.params,
            "gflops": round(self.gflops, 4),
            "latency_ms": round(self.latency_ms, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
        }


RESULT_COLUMNS: tuple[str, ...] = tuple(
    MethodResult("", {k: 0.0 for k in SCALAR_METRICS} | {"confusion_matrix": [[1]]}, 0, 0.0, 0, 0.0, 0.0, 0.0).row()
)


@dataclass
class RunResult:
    run_dir: Path
    results: list[MethodResult] = field(default_factory=list)
    wall_time_s: float = 0.0
    teacher_feature_time_s: float = 0.0
    # kind -> seconds of the FM pass over train+val (measured now or when the cache entry was made)
    fm_pass_s: dict[str, float] = field(default_factory=dict)


def results_table(results: list[MethodResult], majority: Optional[dict[str, Any]] = None) -> str:
    """Markdown table of the test metrics and deployment cost of each method, with the majority-class row and a
    flag on any method whose predictions are (nearly) one class."""
    head = "| method | test acc | bal. acc | macro-F1 | AUC | params (M) | GFLOPs | latency (ms) | train (s) | flags |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 3) + "---|"]
    fastest: dict[tuple[int, float], float] = {}  # one latency per deployed architecture (see LATENCY_RULE)
    for r in results:
        key = (r.params, round(r.gflops, 6))
        fastest[key] = min(fastest.get(key, r.latency_ms), r.latency_ms)
    for r in results:
        t = r.test
        flags = flag_text(t["confusion_matrix"])
        lines.append(
            f"| {r.method} | {t['accuracy']:.4f} | {t['balanced_accuracy']:.4f} | {t['macro_f1']:.4f} | "
            f"{t['auc']:.4f} | {r.params / 1e6:.2f} | {r.gflops:.3f} | {fastest[(r.params, round(r.gflops, 6))]:.1f} | "
            f"{r.train_time_s:.0f} | "
            f"{flags} |"
        )
    if majority is not None:
        m = majority
        lines.append(
            f"| *majority class* | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} | {m['macro_f1']:.4f} | "
            f"{m['auc']:.4f} | | | | | reference |"
        )
    lines += ["", f"Latency: {LATENCY_RULE}; methods that deploy the same network show the fastest of their figures."]
    return "\n".join(lines)
