"""Deployment: export a run's student (safetensors + config.json + ONNX, checked with ONNX Runtime) and predict
with it, loading nothing but the exported files.

    reprodistill export runs/<run>                 # the student method with the best validation score
    reprodistill predict runs/<run>/export img1.png folder/ --csv preds.csv
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from reprodistill.config import RunConfig, StudentConfig, from_dict
from reprodistill.data.dicom import DicomDecoding, MissingCodecError, is_dicom, read_header
from reprodistill.data.image_files import image_suffixes, load_image_file, scan_image_files
from reprodistill.data.transforms import InputSpec, preprocess
from reprodistill.engine.run_dir import RunDir
from reprodistill.errors import DataError, ReprodistillError
from reprodistill.methods import METHODS
from reprodistill.models import Student, create_student
from reprodistill.util.checkpoint import atomic_write, load_checkpoint, write_csv, write_json, write_text
from reprodistill.util.metrics import ranking_metric, selection_score, separating_metric

EXPORT_FORMAT = 1
log = logging.getLogger("reprodistill")


@dataclass
class ExportResult:
    directory: Path
    method: str
    onnx_max_abs_diff: Optional[float]


def pick_student_method(folder: RunDir, method: Optional[str]) -> str:
    """The named method, else the student-deploying method with the best *validation* score in results.csv, by the
    run's own selection metric (the rule that chose each checkpoint; the test split never chooses)."""
    run_dir = folder.path
    if method:
        if not folder.method(method).best.is_file():
            raise ReprodistillError(f"{run_dir}: no trained method {method!r} (missing {method}/best.pt)")
        if not METHODS.get(method).uses_student:
            raise ReprodistillError(
                f"method {method!r} deploys the whole foundation model, not a student; pick another"
            )
        return method
    results = folder.results_csv
    if not results.is_file():
        raise ReprodistillError(f"{run_dir}: no results.csv (is the run finished?); name one with --method")
    with open(results, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] in METHODS and METHODS.get(r["method"]).uses_student]
    if not rows:
        raise ReprodistillError(f"{run_dir}: no method in results.csv deploys a student")
    select = "loss"  # runs written before select_metric existed
    if folder.config.is_file():
        select = (yaml.safe_load(folder.config.read_text()) or {}).get("train", {}).get("select_metric", select)
    metric = ranking_metric(select)
    if f"val_{metric}" not in rows[0] or any(r[f"val_{metric}"] in ("", None, "nan") for r in rows):
        raise ReprodistillError(
            f"{run_dir}: results.csv has no validation scores (a run from an older version); name the student to "
            "export with --method"
        )
    if metric == "auc":  # a saturated AUC no longer separates: balanced accuracy does (SATURATED_AUC)
        metric = separating_metric(metric, max(float(r["val_auc"]) for r in rows))
    best = max(rows, key=lambda r: selection_score(float(r[f"val_{metric}"]), metric))
    log.info("export: %s has the best validation %s of the student methods", best["method"], metric)
    return best["method"]


def _student_state(method_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "student.model."
    state = {k[len(prefix) :]: v.contiguous() for k, v in method_state.items() if k.startswith(prefix)}
    if not state:
        raise ReprodistillError("the checkpoint holds no student weights")
    return state


@dataclass
class TrainedStudent:
    """A finished run's student, rebuilt from its checkpoint, with what it was trained on."""

    student: Student  # in eval mode
    method: str
    cfg: RunConfig  # the run's config.yaml
    data: dict  # the run's data.json
    transfer_s: float  # what training it cost (its result.json; 0 where the method has not finished)
    fm_feature_s: float = 0.0  # the FM pass within transfer_s


def load_trained_student(run_dir: str | Path | RunDir, method: Optional[str] = None) -> TrainedStudent:
    """The student of ``method`` in a finished run folder (a bench cell too), or of its student method with the best
    validation score (:func:`pick_student_method`), from its ``best.pt``."""
    folder = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not folder.config.is_file() or not folder.data_json.is_file():
        raise ReprodistillError(
            f"{folder.path} is not a reprodistill run folder (no config.yaml / data.json); give the folder that "
            "`reprodistill distill` printed, or a bench cell under <bench>/cells/<method>/"
        )
    cfg = from_dict(RunConfig, yaml.safe_load(folder.config.read_text()))
    data = json.loads(folder.data_json.read_text())
    name = pick_student_method(folder, method)
    if not folder.method(name).best.is_file():  # results are committed without weights: another machine lacks them
        raise ReprodistillError(
            f"{folder.path}: {name}/best.pt is missing (checkpoints are never committed with the results); train "
            "the run again there (a bench cell: delete its result.json and rerun the bench) or use the machine that "
            "trained it"
        )
    student = create_student(
        StudentConfig(**{**cfg.student.__dict__, "pretrained": False, "checkpoint": None}),
        num_classes=len(data["class_names"]),
        default_size=tuple(data["load_size"]),
    )
    student.model.load_state_dict(_student_state(load_checkpoint(folder.method(name).best)["method"]), strict=True)
    done = folder.finished(name)
    transfer_s, fm_s = (done.transfer_s, done.fm_feature_s) if done is not None else (0.0, 0.0)
    return TrainedStudent(student.eval(), name, cfg, data, transfer_s, fm_s)


def export_run(run_dir: str | Path, method: Optional[str] = None, onnx: bool = True) -> ExportResult:
    """Write ``<run>/export/{model.safetensors, config.json, model.onnx}`` for the run's best (or named) student."""
    from safetensors.torch import save_file  # noqa: PLC0415

    folder = RunDir(run_dir)
    run_dir = folder.path
    trained = load_trained_student(folder, method)
    cfg, data, name, student = trained.cfg, trained.data, trained.method, trained.student
    state = {k: v.contiguous() for k, v in student.model.state_dict().items()}
    out = folder.export_dir
    out.mkdir(exist_ok=True)
    atomic_write(out / "model.safetensors", lambda p: save_file(state, p))
    test = json.loads(folder.method(name).test_metrics.read_text())
    config = {
        "format": EXPORT_FORMAT,
        "arch": student.arch,
        "num_classes": len(data["class_names"]),
        "class_names": data["class_names"],
        "in_chans": cfg.student.in_chans,
        "input": student.spec.describe(),
        "load": {"size": data["load_size"], "channels": data["channels"]},
        "method": name,
        "test_metrics": {k: test[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")},
        # probabilities = softmax(logits / temperature): fitted on validation (runs from older versions: 1); the
        # ONNX model returns the raw logits
        "temperature": test.get("calibration", {}).get("temperature", 1.0),
        # how training decoded DICOM files (window, frames) and what they were; predict decodes the same way and
        # warns about files of another modality or photometric interpretation
        "dicom": data.get("dicom") or {},
    }
    write_json(out / "config.json", config)
    diff = _export_onnx(student, out / "model.onnx") if onnx else None
    if diff is not None:
        config["onnx_max_abs_diff"] = diff
        write_json(out / "config.json", config)
    return ExportResult(out, name, diff)


def _export_onnx(student: Student, path: Path) -> float:
    """Export to ONNX (dynamic batch) and return the max |logit| difference between ONNX Runtime and PyTorch."""
    import onnxruntime as ort  # noqa: PLC0415

    spec = student.spec
    x = torch.randn(4, spec.channels, *spec.size, generator=torch.Generator().manual_seed(0))

    def write(p: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no extra packages
            torch.onnx.export(
                student,
                (x[:1],),
                p,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )

    atomic_write(path, write)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = student(x).numpy()
    return float(np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max())


def load_exported(directory: str | Path) -> tuple[Student, dict]:
    """Rebuild the student from ``model.safetensors`` + ``config.json`` alone."""
    from safetensors.torch import load_file  # noqa: PLC0415

    directory = Path(directory)
    if (directory / "export").is_dir():
        directory = directory / "export"
    try:
        config = json.loads((directory / "config.json").read_text())
        state = load_file(str(directory / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ReprodistillError(
            f"{directory}: not an exported model ({e}); run `reprodistill export <run>` first"
        ) from None
    student = create_student(
        StudentConfig(name=config["arch"], in_chans=config["in_chans"], image_size=config["input"]["size"][0]),
        num_classes=config["num_classes"],
        default_size=tuple(config["input"]["size"]),
    )
    spec = config["input"]
    student.spec = InputSpec(
        size=tuple(spec["size"]),
        channels=spec["channels"],
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        interpolation=spec["interpolation"],
    )
    student.model.load_state_dict(state, strict=True)
    return student.eval(), config


def dicom_mismatch(path: Path, trained: dict) -> list[str]:
    """Warnings for a DICOM file unlike the training data (another modality or photometric interpretation)."""
    if not trained:
        return [f"{path.name}: a DICOM file, but the model was trained on no DICOM files; check the prediction"]
    header, out = read_header(path), []
    for key, what in (("modality", "modality"), ("photometric", "photometric interpretation")):
        if header[key] not in trained.get(key, {}):
            out.append(
                f"{path.name}: {what} {header[key] or '(none)'} is not among the training data's "
                f"{sorted(trained.get(key, {}))}; the prediction may not mean what it did in training"
            )
    return out


def image_files(inputs: list[str], notes: Optional[list[str]] = None) -> list[Path]:
    """Expand files and folders (recursively) into image files; a missing path is an error. DICOM files in a folder
    that hold no image (a DICOMDIR, reports) are left out, with a line in ``notes`` saying how many."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            scan = scan_image_files(p)
            files += scan.files
            if notes is not None and (note := scan.note(str(p))):
                notes.append(note)
        elif p.is_file():
            files.append(p)
        else:
            raise ReprodistillError(f"{p}: no such file or folder")
    if not files:
        raise ReprodistillError(f"no image files ({', '.join(image_suffixes())}) in {inputs}")
    return files


@torch.inference_mode()
def predict_files(
    directory: str | Path,
    inputs: list[str],
    batch_size: int = 64,
    skipped: Optional[list[str]] = None,
    warnings: Optional[list[str]] = None,
) -> list[dict]:
    """[{'path', 'label', 'probabilities': {class: p}}] for every readable image in ``inputs``.

    A file that cannot be decoded does not abort the batch: it is left out and its path (with the reason) appended
    to ``skipped``; when no file at all could be read, a ReprodistillError says so. DICOM files are decoded as the
    training data were; one whose modality or photometric interpretation the training data did not have gets a
    line in ``warnings``.
    """
    student, config = load_exported(directory)
    load = config["load"]
    names = config["class_names"]
    files = image_files(inputs, warnings)
    skipped = [] if skipped is None else skipped
    trained_dicom = config.get("dicom") or {}
    decoding = {"dicom": DicomDecoding(**trained_dicom.get("decoding", {}))}  # as the training data were decoded
    rows = []
    for i in range(0, len(files), batch_size):
        chunk, arrays = [], []
        for f in files[i : i + batch_size]:
            try:
                arrays.append(load_image_file(str(f), load["channels"], tuple(load["size"]), decoding))
                chunk.append(f)
            except MissingCodecError:
                raise  # every file of that kind would fail: stop with the package to install
            except DataError as e:
                skipped.append(str(e).split("; remove")[0])  # "<path>: cannot decode image (<reason>)"
                continue
            if warnings is not None and is_dicom(f):
                warnings += dicom_mismatch(f, trained_dicom)
        if not chunk:
            continue
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        logits = student(preprocess(images, student.spec))
        probs = (logits / config.get("temperature", 1.0)).softmax(-1).numpy()
        for f, p in zip(chunk, probs):
            rows.append(
                {
                    "path": str(f),
                    "label": names[int(p.argmax())],
                    "probabilities": {n: float(v) for n, v in zip(names, p)},
                }
            )
    if not rows:
        raise ReprodistillError(f"none of the {len(files)} image files could be decoded, e.g. {skipped[:3]}")
    return rows


def write_predictions(rows: list[dict], path: Path) -> None:
    """CSV (path,label,p_<class>...) or JSON, by the file's suffix."""
    if path.suffix.lower() == ".json":
        write_text(path, json.dumps(rows, indent=2) + "\n")
        return
    names = list(rows[0]["probabilities"]) if rows else []
    table = [{"path": r["path"], "label": r["label"], **{f"p_{n}": f"{r['probabilities'][n]:.6f}" for n in names}}
             for r in rows]  # fmt: skip
    write_csv(path, table, ["path", "label", *[f"p_{n}" for n in names]])
