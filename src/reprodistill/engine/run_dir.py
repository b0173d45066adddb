"""The run folder: its layout, its lock, and every file a run writes into it (atomically, rank 0 only).

Layout::

    runs/<time>-<name>/
      config.yaml  env.json  data.json  teacher.json  log.txt  results.csv  results.md  [retest.json]
      <method>/metrics.csv  best.pt  last.pt  test_metrics.json  {val,test}_predictions.csv  result.json
               [prepare_curve.csv]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from reprodistill.config import RunConfig, current_keys, to_dict
from reprodistill.data.image_files import relative_names
from reprodistill.data.sources import DataBundle
from reprodistill.engine.profile import peak_rss_mb
from reprodistill.engine.results import RESULT_COLUMNS, MethodResult, RunResult, results_table
from reprodistill.engine.sanity import majority_metrics, published_line
from reprodistill.errors import ReprodistillError
from reprodistill.models.teacher import Teacher
from reprodistill.util.checkpoint import read_json, write_csv, write_json, write_text
from reprodistill.util.lock import FolderLock
from reprodistill.util.metrics import selection_rule_text


class MethodDir:
    """The folder of one method inside a run folder."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"MethodDir({str(self.path)!r})"

    @property
    def best(self) -> Path:
        """The reported checkpoint (see ``train.select_metric``)."""
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        """The resumable state after the last finished epoch."""
        return self.path / "last.pt"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def test_metrics(self) -> Path:
        return self.path / "test_metrics.json"

    @property
    def test_predictions(self) -> Path:
        """Per-image test outputs of the reported checkpoint (calibrated probabilities, as ``predict`` prints)."""
        return self.path / "test_predictions.csv"

    @property
    def val_predictions(self) -> Path:
        """Per-image validation outputs of the same checkpoint, in the same form: what an operating point (a decision
        threshold) chosen on validation needs, without the weights."""
        return self.path / "val_predictions.csv"

    @property
    def prepare_curve(self) -> Path:
        """The validation curve of the method's preparation, where it trains something there (TDMR's stage 1)."""
        return self.path / "prepare_curve.csv"

    @property
    def result(self) -> Path:
        """Written last: its presence marks the method finished."""
        return self.path / "result.json"


class RunDir:
    """One run folder. Paths are properties; ``write_*`` methods write atomically (call them on rank 0 only)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def new(cls, cfg: RunConfig) -> RunDir:
        """A fresh time-stamped folder under ``cfg.out_dir`` (not created yet)."""
        base = Path(cfg.out_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name or 'run'}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        return cls(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- layout ----------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.path / "results.md"

    @property
    def data_json(self) -> Path:
        return self.path / "data.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def method(self, name: str) -> MethodDir:
        """The folder of one method: metrics.csv, best.pt, last.pt, test_metrics.json, result.json."""
        return MethodDir(self.path / name)

    def lock(self) -> FolderLock:
        return FolderLock(self.path)

    # ---- reading -----------------------------------------------------------------------------------------------
    def holds_same_run(self, cfg: RunConfig) -> bool:
        """True if the folder holds a run started with this same config (so it is resumed). A run folder is never
        overwritten with different settings: a changed key is an error naming it."""
        if not self.config.is_file():
            return False
        if not self.trained_anything():  # e.g. stopped by a data check: nothing to keep, so any config may start
            return False
        old, new = _flatten(current_keys(yaml.safe_load(self.config.read_text()))), _flatten(to_dict(cfg))
        defaults = _flatten(to_dict(RunConfig()))
        # a key added to reprodistill after the run started is no change if this run leaves it at its default
        changed = sorted(
            k
            for k in set(old) | set(new)
            if old.get(k) != new.get(k) and not (k not in old and new[k] == defaults.get(k))
        )
        if changed:
            raise ReprodistillError(
                f"{self.path} already holds a run with a different config (changed: {changed}); "
                "rerun with the original settings to resume it, or pick a new --run-dir"
            )
        return True

    def trained_anything(self) -> bool:
        """Whether some method of this folder started training (it has a method folder with metrics or a
        checkpoint); a folder whose run stopped before (a data check, a missing codec) holds nothing to resume."""
        return any(
            (d / f).exists() for d in self.path.iterdir() if d.is_dir() and d.name != "export"
            for f in ("metrics.csv", "last.pt", "best.pt", "result.json", "prepare_curve.csv")
        )  # fmt: skip

    def finished(self, name: str) -> Optional[MethodResult]:
        """The stored result of a method that finished in this folder, else None."""
        path = self.method(name).result
        return MethodResult.from_json(read_json(path)) if path.is_file() else None

    # ---- writing (rank 0) --------------------------------------------------------------------------------------
    def start(self, cfg: RunConfig, environment: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        write_json(self.path / "env.json", environment)

    def write_retest(self, environment: dict[str, Any]) -> None:
        """retest.json: the environment (code commit, versions) of the last re-test of the stored checkpoints."""
        write_json(self.path / "retest.json", {**environment, "retested_at": time.strftime("%Y-%m-%d %H:%M:%S")})

    def write_data(self, data: DataBundle) -> None:
        """data.json: what the run trained and tested on (sizes and class counts per split, DICOM decoding)."""
        write_json(
            self.data_json,
            {
                "source": data.source,
                "class_names": data.class_names,
                "channels": data.channels,
                **split_summary(data),
                "unlabelled": 0 if data.unlabelled is None else len(data.unlabelled.split),
                # DICOM decoding (window, frames) and what the files were (modality / photometric counts); export
                # copies it so predict decodes the same way
                "dicom": data.dicom,
                "splits_made": data.splits_made,
                # what reading the data did: files skipped and why, hold-out sizes asked and got (no patient data)
                "notes": data.notes,
            },
        )
        files = [(s, p, int(y)) for s, split in (("train", data.train), ("val", data.val), ("test", data.test),
                                                 ("unlabelled", data.unlabelled.split if data.unlabelled else None))
                 if split is not None and split.paths is not None
                 for p, y in zip(split.paths, split.labels, strict=True)]  # fmt: skip
        if files:  # which file went where, for an audit of the splits (file sources only; paths relative to the data)
            names = relative_names([p for _, p, _ in files])
            rows = [{"split": s, "file": n, "label": data.class_names[y] if y >= 0 else ""}
                    for (s, _, y), n in zip(files, names, strict=True)]  # fmt: skip
            write_csv(self.path / "splits.csv", rows, ["split", "file", "label"])

    def write_teacher(self, teacher: Teacher) -> None:
        """teacher.json: what the FM saw (its preprocessing record) and the pooled-feature layout."""
        write_json(
            self.path / "teacher.json",
            {
                "name": teacher.name,
                "identity": teacher.identity,
                "preprocessing": teacher.spec.describe(),
                "pooled_dim": teacher.feature_dim,
                "pool_layers": list(teacher.pool_layers),
            },
        )

    def write_method_result(self, result: MethodResult, keep_last: bool) -> None:
        """test_metrics.json and result.json of a finished method (result.json marks it done for a resume)."""
        out = self.method(result.method)
        write_json(out.test_metrics, result.test)
        write_json(out.result, dataclasses.asdict(result))
        if not keep_last:  # finished: resume needs result.json only; optimizer state is ~100 MB+
            out.last.unlink(missing_ok=True)

    def write_results(self, res: RunResult, data: DataBundle, select: str) -> None:
        """results.csv (one row per method) and results.md (the table, majority row, flags and reference)."""
        write_csv(self.results_csv, (r.row() for r in res.results), RESULT_COLUMNS)
        majority = majority_metrics(
            np.bincount(data.train.labels, minlength=data.num_classes).tolist(),
            np.bincount(data.test.labels, minlength=data.num_classes).tolist(),
        )
        md = [
            f"# reprodistill run {self.path.name}",
            "",
            f"Data: {data.source} — train {len(data.train)}, val {len(data.val)}, test {len(data.test)}; "
            f"classes {data.class_names}",
            "",
            results_table(res.results, majority),
            "",
            published_line(data.source),
            "",
            f"Reported checkpoint of each method: best.pt, {selection_rule_text(select)} (never the test split); "
            "export and predict use the same one.",
            "",
            f"Wall time {res.wall_time_s:.0f} s (teacher features {res.teacher_feature_time_s:.0f} s); "
            f"peak RSS {peak_rss_mb():.0f} MB.",
        ]
        write_text(self.results_md, "\n".join(md) + "\n")


def split_summary(data: DataBundle) -> dict[str, Any]:
    """data.json's load size, split sizes and class counts per split: what says which images a run trained on."""
    splits = ("train", "val", "test")
    return {
        "load_size": list(data.load_size),
        "sizes": {s: len(getattr(data, s)) for s in splits},
        "class_counts": {s: np.bincount(getattr(data, s).labels, minlength=data.num_classes).tolist() for s in splits},
    }


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
