"""Typed run configuration: YAML presets + dotted command-line overrides, validated with clear errors.

Library code only sees these dataclasses; the CLI builds them. Example::

    cfg = load_config("default", ["train.epochs=5", "student.name=mobilenetv3_small_100"])
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from reprodistill.errors import ConfigError


@dataclass
class DicomConfig:
    """How DICOM files (.dcm, .dicom, or no suffix with the DICM preamble) become images (``data.dicom.*``)."""

    # The modality LUT is always applied, then this window: 'auto' (the file's VOI LUT / window centre-width, else
    # min-max), 'file', 'minmax', a named window (lung, soft_tissue, bone, brain) or 'centre,width' in modality units
    # ('-600,1500' HU). MONOCHROME1 is inverted after it. export records it, so predict decodes as training did.
    window: str = "auto"
    # Multi-frame DICOM files: use the 'first' or 'middle' frame, or 'refuse' them.
    frames: Literal["first", "middle", "refuse"] = "middle"


@dataclass
class CsvConfig:
    """Label tables (``data.source=<file>.csv``; ``data.csv.*``)."""

    # The column naming each image (null: the first of path, Path, image, image_id, ImageId, patientId, dicom_id,
    # file, filename) and what it holds: a 'path' (relative to the CSV or image_root), a file 'stem', a DICOM
    # SOPInstanceUID ('uid'), or 'auto'.
    key_column: Optional[str] = None
    key: Literal["auto", "path", "stem", "uid"] = "auto"
    label_column: str = "label"
    # Folder searched for stems / UIDs and base of relative paths (null: the CSV's folder).
    image_root: Optional[str] = None
    # Several rows for one image (one per box or reader): 'agree' (an error if their labels differ), 'first',
    # 'majority', or 'max' (any positive reading of a 0/1 finding counts).
    rows: Literal["agree", "first", "majority", "max"] = "agree"
    # A patient column: the val / test hold-outs made from the training split then never split a patient.
    patient_column: Optional[str] = None


@dataclass
class DataConfig:
    """Where the images come from and how they are split and subsampled."""

    # medmnist:<flag> | path to a MedMNIST-style .npz | an ImageFolder directory | a CSV file with path,label[,split]
    source: str = "medmnist:pneumoniamnist"
    # Extra directory searched for medmnist:<flag> files (besides $REPRODISTILL_DATA, ~/.medmnist, ../shared/data).
    root: Optional[str] = None
    # Size every image is loaded at (square); None keeps the native size of npz data and uses 224 for image files.
    load_size: Optional[int] = None
    # 'auto' keeps npz channels and loads image files as RGB; 1 or 3 forces grayscale or RGB.
    channels: Literal["auto", 1, 3] = "auto"
    # Limited-data training: keep this fraction of the training split (stratified), or k images per class.
    fraction: float = 1.0
    k_per_class: Optional[int] = None
    # Used only when the source has no official validation / test split: stratified hold-out fractions.
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    # Seed of every split and subsample, independent of the training seed so that seeds compare like with like.
    split_seed: int = 0
    # Seed of the limited-data subset only (null: split_seed). `bench` sets it to each cell's seed, so seeds differ
    # in which images a 10% run sees, not only in initialisation, while val/test stay fixed.
    subset_seed: Optional[int] = None
    # Unlabelled images for the distillation methods: the teacher's outputs on them are extra distillation targets,
    # the setting of a hospital with many images and few labels. A folder of image files (any layout), or 'rest': the
    # training images a limited-data run (`fraction` / `k_per_class`) leaves out, labels hidden (never read). Methods
    # that need labels for every image (student alone, probes, dkd, tdmr) still train on the labelled images only.
    # 'none': labelled images only.
    unlabelled: str = "none"
    # Share of each training batch drawn from the unlabelled images (the rest from the labelled ones).
    unlabelled_share: float = 0.5
    class_names: Optional[list[str]] = None
    # Image files that cannot be used (a cut header, truncated pixel data, a file that is not an image), found for
    # every file before training: stop with their paths and causes (false) or leave them out and count them (true).
    skip_bad_images: bool = False
    # Val / test hold-outs the tool makes from the training split keep each patient on one side: DICOM files are
    # grouped by PatientID (else StudyInstanceUID, else the file); data.csv_patient_column takes precedence. false:
    # split image by image (slices of one patient can then land in train and test, and test metrics measure
    # memorised patients).
    split_by_patient: bool = True
    # Settings of one image format or source kind each, in sections of their own
    dicom: DicomConfig = field(default_factory=DicomConfig)
    csv: CsvConfig = field(default_factory=CsvConfig)
    # flat keys of earlier versions -> where they live now (configs and run folders that use them still load)
    RENAMED: ClassVar[dict[str, str]] = {
        "dicom_window": "dicom.window", "dicom_frames": "dicom.frames", "csv_key_column": "csv.key_column",
        "csv_key": "csv.key", "csv_label_column": "csv.label_column", "csv_image_root": "csv.image_root",
        "csv_rows": "csv.rows", "csv_patient_column": "csv.patient_column",
    }  # fmt: skip


@dataclass
class TeacherConfig:
    """The frozen foundation model."""

    # merlin | efficientnet_lite0 | open_clip:<model> | hf:<repo or folder> | any timm name | hf-hub:<repo> (timm) |
    # a local checkpoint file (with `arch`)
    name: str = "merlin"
    # For merlin: which packaged weights ('astra') or a path to a state-dict file.
    weights: Optional[str] = None
    # timm architecture for a local checkpoint file given as `name` or `weights`.
    arch: Optional[str] = None
    # Input size; None uses the teacher's own default (112 for merlin, 224 for efficientnet_lite0).
    image_size: Optional[int] = None
    # Inner layers (module names inside the FM network, e.g. 'layer3') whose globally averaged outputs are
    # concatenated, in this order, before the last map's pooled vector to form the pooled feature every pooled-feature
    # method sees (probe, KD teachers, RD's phi). 'auto': the teacher's own default (merlin: ['layer3'], since a
    # CT-trained FM's mid-level features transfer to X-ray and ultrasound better than its last stage alone); []: the
    # last map only. Feature maps (DRD, FitNet, AT) are always the last map.
    pool_layers: Union[Literal["auto"], list[str]] = "auto"
    # The FM's own pooled embedding: open_clip 'pre' (before CLIP's projection, the default) or 'post'; hf: 'cls'
    # (class token, the default) or 'mean' (mean of the patch tokens); 'auto' = the default of the teacher kind.
    embedding: Literal["auto", "pre", "post", "cls", "mean"] = "auto"
    batch_size: int = 64
    # FM inference precision: 'auto' = bf16 autocast on a CUDA GPU that supports it, else fp32. bf16 on CPU is
    # allowed (about 2x faster for Merlin on this project's CPU) but changes the features, so it is opt-in there.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch.compile the FM's forward (worth it for long feature passes on GPU; first batch pays the compile time).
    compile: bool = False
    # Cached augmented views per training image (1: the fixed view only). With K > 1 the FM pass over the training
    # split runs K times (view 0 fixed, views 1..K-1 shifted/flipped by train.augment_*), and each training image
    # shows the student one of its K views at random, with the FM features of that view.
    views: int = 1
    # How views 1..K-1 are made: 'weak' (the shift / flip of train.augment_*), 'strong' (RandAugment + Cutout after
    # it, FixMatch's strong view, fixed per view and image so the FM's features of it are cached) or 'mixup' (weak,
    # and each unlabelled image mixed with another unlabelled one, partner and weight ~ U(0, 1) fixed per view and
    # image: Beyer et al.'s function matching; labelled images' views stay unmixed; needs data.unlabelled).
    view_augment: Literal["weak", "strong", "mixup"] = "weak"
    # 'cached': one FM pass per image (fixed view), reused every epoch; 'online': run the FM on every augmented
    # training batch (the student's view; FM cost every step, as in plain KD).
    features: Literal["cached", "online"] = "cached"
    # Where fixed-view teacher features are cached across runs (fp16 .npy, keyed by teacher/data/transform); 'auto':
    # $XDG_CACHE_HOME/reprodistill/features (default ~/.cache/reprodistill/features); null: off.
    cache_dir: Optional[str] = "auto"


@dataclass
class StudentConfig:
    """The small model to deploy."""

    name: str = "resnet18"
    # Start from ImageNet weights (packaged offline for efficientnet_lite0; other names need the hub or `checkpoint`).
    pretrained: bool = False
    checkpoint: Optional[str] = None
    # Input size; None uses the data's load size.
    image_size: Optional[int] = None
    in_chans: int = 3
    drop_rate: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method, so comparisons use the same budget."""

    # Without `steps`: passes over the training split. With `steps`: evaluation rounds (validation, best/last
    # checkpoint) that split the step budget evenly.
    epochs: int = 10
    # Optimiser steps in all (null: `epochs` passes over the data). A step budget is the same at every training-set
    # size, so a 10% run gets as many updates as a full one instead of a tenth of them.
    steps: Optional[int] = None
    batch_size: int = 128
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: float = 0.0
    # 'balanced' weights the cross-entropy by inverse class frequency (medical data is often imbalanced).
    class_weights: Literal["none", "balanced"] = "balanced"
    label_smoothing: float = 0.0
    # Light augmentation of the student's view: random shift (pixels, at load size) and horizontal flip.
    augment_shift: int = 2
    augment_flip: bool = False
    # Which evaluation round is reported (best.pt; the report, plots and export all use it). 'last' (default): the
    # end of the budget, no choice on validation: with a converged, annealed step budget a choice among rounds on a
    # few dozen validation images mostly adds noise (on BreastMNIST 10% the validation loss picked round 1 of 15 in
    # 6 of 8 cells, as overconfidence inflates the loss while the AUC still improved). 'loss': the class-weighted
    # validation cross-entropy; the others: that validation metric (AUC saturates near 0.99 on PneumoniaMNIST's).
    select_metric: Literal["last", "accuracy", "balanced_accuracy", "macro_f1", "auc", "loss"] = "last"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    grad_clip: Optional[float] = 5.0
    # Keep each method's last.pt (weights + optimizer state, 100+ MB for resnet18) after it finished; best.pt and
    # result.json are always kept. Only an unfinished method needs last.pt, to resume.
    keep_last: bool = False


@dataclass
class BenchConfig:
    """The grid of ``reprodistill bench``: every method x seed x training fraction, all else identical."""

    seeds: list[int] = field(default_factory=lambda: [0])
    fractions: list[float] = field(default_factory=lambda: [1.0])
    # Named method variants usable in `methods` of a bench, e.g. for ablations:
    # {tdmr-no-prompt: {method: tdmr, options: {prompt: none}}}; options are merged over method_options.<method>.
    # A variant may also override `data`, `train` or `student` keys: {kd-unl: {method: kd, data: {unlabelled: rest}}}.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Step budgets to choose among on validation like any other setting: with [300, 1500] every method becomes two
    # rows, <method>@300 and <method>@1500 (variants setting train.steps = N; a variant that sets its own
    # train.steps keeps it and its name). Empty: every row at train.steps.
    steps: list[int] = field(default_factory=list)


@dataclass
class RunConfig:
    """A whole run: data, teacher, student, training, and the methods to compare."""

    methods: list[str] = field(default_factory=lambda: ["student", "linear_probe"])
    # Per-method options, validated against each method's Options dataclass: {method_name: {key: value}}.
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    out_dir: str = "runs"
    name: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


def preset_names() -> list[str]:
    """Names of the YAML presets shipped inside the package."""
    return sorted(p.name[:-5] for p in resources.files("reprodistill.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(preset_or_path: str) -> dict[str, Any]:
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():  # a folder named like a preset is not a config
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; give a file or one of the presets: {preset_names()}")
        text = path.read_text()
    else:
        res = resources.files("reprodistill.configs") / f"{preset_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown preset {preset_or_path!r}; presets: {preset_names()} (or give a .yaml path)")
        text = res.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{preset_or_path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{preset_or_path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.epochs=5"`` into (["train", "epochs"], 5); the value is parsed as YAML (safe)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string; users mean a number
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def _set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {k} is not a section")
    node[keys[-1]] = value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) one value against a type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not valid; choose one of {list(choices)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]  # `methods=student` means a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and ill-typed values with a clear message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    data = _renamed(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where != "config" else k) for k, v in data.items()}
    return cls(**kwargs)


def _renamed(cls: type, data: dict[str, Any], where: str, warn: bool = True) -> dict[str, Any]:
    """``data`` with the keys ``cls.RENAMED`` lists moved to where they live now (a warning names the new key)."""
    moves = {k: v for k, v in getattr(cls, "RENAMED", {}).items() if k in data}
    if not moves:
        return data
    data = dict(data)
    for old, new in moves.items():
        if "." not in new:  # renamed in place
            data[new] = data.pop(old)
            continue
        section, key = new.split(".")
        data[section] = {**(data.get(section) or {}), key: data.pop(old)}
        if warn:
            logging.getLogger("reprodistill").warning("%s.%s is now %s.%s", where, old, where, new)
    return data


def current_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A stored run config (config.yaml of a run folder) with the keys of earlier versions where they live now, so
    it compares with today's config key by key."""
    out = dict(data)
    for f in dataclasses.fields(RunConfig):
        if isinstance(out.get(f.name), dict) and isinstance(f.default_factory, type):  # type: ignore[misc]
            out[f.name] = _renamed(f.default_factory, out[f.name], f.name, warn=False)
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml in the run folder)."""
    return dataclasses.asdict(cfg)


def method_variant(cfg: RunConfig, name: str) -> tuple[str, dict[str, Any]]:
    """(registered method, its options) of a name in ``cfg.methods``: a method itself or a ``bench.variants`` entry."""
    v = cfg.bench.variants.get(name)
    if v is None:
        return name, dict(cfg.method_options.get(name) or {})
    if set(v) - {"method", "options", *VARIANT_SECTIONS} or "method" not in v:
        raise ConfigError(
            f"bench.variants.{name} must look like {{method: <registered method>, options: {{...}}}} (optionally "
            f"with {list(VARIANT_SECTIONS)} overrides), got {v}"
        )
    return v["method"], {**(cfg.method_options.get(v["method"]) or {}), **(v.get("options") or {})}


def expand_budgets(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its budget axis (``bench.steps``) turned into variants ``<method>@<steps>`` (each a copy of the
    method's variant with ``train.steps`` set), in ``methods`` in budget order per method, and ``bench.steps``
    emptied, so expanding twice changes nothing. A method whose variant sets ``train.steps`` itself stays as it is."""
    if not cfg.bench.steps:
        return cfg
    if any(int(n) < 1 for n in cfg.bench.steps):
        raise ConfigError(f"bench.steps must be positive step counts, got {cfg.bench.steps}")
    out = copy.deepcopy(cfg)
    methods: list[str] = []
    for m in cfg.methods:
        v = cfg.bench.variants.get(m) or {"method": m}
        if "steps" in (v.get("train") or {}):
            methods.append(m)
            continue
        for n in sorted({int(n) for n in cfg.bench.steps}):
            name = f"{m}@{n}"
            out.bench.variants[name] = {**copy.deepcopy(v), "train": {**(v.get("train") or {}), "steps": n}}
            methods.append(name)
    out.methods, out.bench.steps = methods, []
    return out


# Config sections a bench variant may override, e.g. the pretrained student row: {lite0-pre: {method: student,
# student: {name: efficientnet_lite0, pretrained: true}}}. The FM is shared by every cell of a bench, so of the
# teacher section only what does not change the FM: its cached views (consistent teaching).
VARIANT_SECTIONS = ("data", "train", "student", "teacher")
TEACHER_VARIANT_KEYS = ("views", "view_augment")


def apply_variant_sections(cfg: RunConfig, name: str) -> RunConfig:
    """``cfg`` with the ``data`` / ``train`` / ``student`` (and cached-view ``teacher``) overrides of variant ``name``
    applied (in place; checked types)."""
    v = cfg.bench.variants.get(name) or {}
    fm_keys = sorted(set(v.get("teacher") or {}) - set(TEACHER_VARIANT_KEYS))
    if fm_keys:
        raise ConfigError(
            f"bench.variants.{name}.teacher: {fm_keys} would change the FM, which every cell of a bench shares; a "
            f"variant may set {list(TEACHER_VARIANT_KEYS)} only (run another bench per FM)"
        )
    for section in VARIANT_SECTIONS:
        if v.get(section):
            current = getattr(cfg, section)
            merged = {**to_dict(current), **v[section]}
            setattr(cfg, section, from_dict(type(current), merged, f"bench.variants.{name}.{section}"))
    return cfg


def validate(cfg: RunConfig) -> RunConfig:
    """Check value ranges and cross-field rules that types alone cannot express."""
    d, t = cfg.data, cfg.train
    if not 0.0 < d.fraction <= 1.0:
        raise ConfigError(f"data.fraction must be in (0, 1], got {d.fraction}")
    if d.k_per_class is not None and d.k_per_class < 1:
        raise ConfigError(f"data.k_per_class must be >= 1, got {d.k_per_class}")
    if d.unlabelled not in ("none", "rest") and not Path(d.unlabelled).expanduser().is_dir():
        raise ConfigError(f"data.unlabelled={d.unlabelled}: no such folder; give a folder of images, 'rest' or 'none'")
    if not 0.0 < d.unlabelled_share < 1.0:
        raise ConfigError(f"data.unlabelled_share must be in (0, 1), got {d.unlabelled_share}")
    for name in ("val_fraction", "test_fraction"):
        if not 0.0 < getattr(d, name) < 1.0:
            raise ConfigError(f"data.{name} must be in (0, 1), got {getattr(d, name)}")
    if t.epochs < 1 or t.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be >= 1")
    if t.steps is not None and t.steps < t.epochs:
        raise ConfigError(
            f"train.steps={t.steps} is fewer than train.epochs={t.epochs} evaluation rounds; raise train.steps, lower "
            "train.epochs, or set train.steps=null to count passes over the data"
        )
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if cfg.teacher.views < 1:
        raise ConfigError(f"teacher.views must be >= 1 (1 = the fixed view only), got {cfg.teacher.views}")
    if cfg.teacher.view_augment != "weak" and cfg.teacher.views < 2:
        raise ConfigError(f"teacher.view_augment={cfg.teacher.view_augment} augments the cached views 1..K-1: set "
                          "teacher.views=K >= 2 (e.g. 8)")  # fmt: skip
    if cfg.teacher.view_augment == "mixup" and cfg.data.unlabelled == "none":
        raise ConfigError("teacher.view_augment=mixup mixes the unlabelled images' views (a labelled image's label "
                          "would not hold for a mixture): set data.unlabelled (e.g. rest)")  # fmt: skip
    b = cfg.bench
    if not b.seeds or not b.fractions:
        raise ConfigError("bench.seeds and bench.fractions need at least one value each, e.g. bench.seeds=[0,1,2]")
    if any(not 0.0 < f <= 1.0 for f in b.fractions):
        raise ConfigError(f"bench.fractions must lie in (0, 1], got {b.fractions}")
    if len(set(b.seeds)) != len(b.seeds) or len(set(b.fractions)) != len(b.fractions):
        raise ConfigError(f"bench.seeds / bench.fractions repeat a value: {b.seeds} / {b.fractions}")
    if not cfg.methods:
        raise ConfigError("methods is empty; name at least one method, e.g. methods=[student,linear_probe]")
    for name in cfg.methods:  # a variant's overrides are checked now, not hours into a bench
        base, opts = method_variant(cfg, name)
        if any(s in cfg.bench.variants.get(name, {}) for s in VARIANT_SECTIONS):
            variant = apply_variant_sections(copy.deepcopy(cfg), name)
            variant.methods, variant.method_options, variant.bench = [base], {base: opts}, BenchConfig()
            try:
                validate(variant)
            except ConfigError as e:
                raise ConfigError(f"bench.variants.{name}: {e}") from None
    # method names and options are checked against the registry by reprodistill.methods.check_config (the
    # registry lives above this module: config must not import the methods)
    return cfg


def load_config(preset_or_path: str = "default", overrides: list[str] | None = None) -> RunConfig:
    """Load a preset name or YAML path, apply dotted overrides, and return a validated RunConfig."""
    data = _read_yaml(preset_or_path)
    for text in overrides or []:
        keys, value = parse_override(text)
        _set_dotted(data, keys, value)
    return validate(from_dict(RunConfig, data))
