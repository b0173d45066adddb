"""DICOM decoding on the files that ship inside the pydicom wheel (no download): the modality LUT, windows against
hand computations, MONOCHROME1 inversion, colour, multi-frame policies, missing codecs, and DICOM files as data."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

from reprodistill.data.dicom import DicomDecoding, MissingCodecError, is_dicom, read_dicom  # noqa: E402
from reprodistill.errors import DataError  # noqa: E402


def bundled(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom wheel")
    return Path(path)


def _raw(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array.astype(np.float64)


def test_ct_modality_lut_gives_hounsfield_units():
    """CT_small: signed 16-bit, slope 1, intercept -1024: stored 128..2191 are -896..1167 HU."""
    path = bundled("CT_small.dcm")
    px, info = read_dicom(path, DicomDecoding(window="minmax"))
    assert info.stored_dtype == "int16" and info.modality == "CT" and info.photometric == "MONOCHROME2"
    assert info.modality_range == [-896.0, 1167.0] and info.window == "minmax"
    hu = _raw(path) - 1024.0
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    assert px.shape == (128, 128, 1) and np.abs(px[..., 0].astype(int) - expected).max() <= 1
    # a lung window in HU: LINEAR, (x - (c - 0.5)) / (w - 1) + 0.5 clipped, by hand
    lung, info = read_dicom(path, DicomDecoding(window="lung"))
    y = np.clip((hu - (-600 - 0.5)) / (1500 - 1) + 0.5, 0, 1)
    assert info.window == "-600,1500 (fixed)" and np.abs(lung[..., 0].astype(int) - np.rint(y * 255)).max() <= 1
    same, _ = read_dicom(path, DicomDecoding(window="-600,1500"))
    assert np.array_equal(same, lung)


def test_the_files_own_window_against_a_hand_computation():
    """MR_small: no rescale, window centre 600 / width 1600 in the file."""
    path = bundled("MR_small.dcm")
    px, info = read_dicom(path)  # auto: the file's window
    assert info.window == "600,1600 (file)"
    y = np.clip((_raw(path) - 599.5) / 1599 + 0.5, 0, 1)
    assert np.abs(px[..., 0].astype(int) - np.rint(y * 255)).max() <= 1
    with pytest.raises(DataError, match="no VOI LUT and no window"):
        read_dicom(bundled("CT_small.dcm"), DicomDecoding(window="file"))


def test_monochrome1_comes_out_inverted_after_windowing(tmp_path):
    """The CR file (MONOCHROME1, slope 0.684, intercept 200, window 1600/2800): bright bone must stay bright, so
    the decoded image is the inverse of the same file read as MONOCHROME2."""
    path = bundled(str(Path("dicomdirtests") / "77654033" / "CR1" / "6154"))
    assert is_dicom(path) and path.suffix == ""  # extension-less, found by its DICM preamble
    px, info = read_dicom(path)
    assert info.photometric == "MONOCHROME1" and info.inverted and info.window == "1600,2800 (file)"
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "as_mono2.dcm")
    plain, info2 = read_dicom(tmp_path / "as_mono2.dcm")
    assert not info2.inverted
    assert np.abs(px.astype(int) + plain.astype(int) - 255).max() <= 1
    hu = _raw(path) * 0.684 + 200
    y = 1 - np.clip((hu - 1599.5) / 2799 + 0.5, 0, 1)
    assert np.abs(px[..., 0].astype(int) - np.rint(y * 255)).max() <= 1


def test_ybr_ultrasound_and_palette_files_give_rgb():
    from pydicom.pixels import apply_color_lut, pixel_array

    ybr = bundled("examples_ybr_color.dcm")
    px, info = read_dicom(ybr, DicomDecoding(frames="first"))
    assert info.photometric == "YBR_FULL_422" and info.channels == 3 and px.shape == (240, 320, 3)
    assert info.frame == 0 and np.array_equal(px, pixel_array(ybr, index=0))  # pydicom 3 converts YBR to RGB
    pal = bundled("examples_palette.dcm")
    px, info = read_dicom(pal)
    assert info.photometric == "PALETTE COLOR" and px.shape == (350, 800, 3)
    ds = pydicom.dcmread(pal)
    expected = np.rint(apply_color_lut(ds.pixel_array, ds) / 65535.0 * 255)
    assert np.abs(px.astype(int) - expected).max() <= 1


def test_multi_frame_files_follow_the_declared_policy():
    from pydicom.pixels import pixel_array

    path = bundled("examples_ybr_color.dcm")  # 30 frames
    middle, info = read_dicom(path)  # the default: the middle frame
    assert info.frame == 15 and np.array_equal(middle, pixel_array(path, index=15))
    with pytest.raises(DataError, match="multi-frame DICOM \\(30 frames\\); set data.dicom.frames"):
        read_dicom(path, DicomDecoding(frames="refuse"))
    with pytest.raises(DataError, match="data.dicom.frames"):
        DicomDecoding(frames="all")
    with pytest.raises(DataError, match="centre,width"):
        DicomDecoding(window="wide")


def test_a_codec_that_is_not_installed_is_named():
    path = bundled("MR_small_jpeg_ls_lossless.dcm")
    pytest.importorskip("pydicom")
    from pydicom.pixels import get_decoder

    if get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(MissingCodecError, match="JPEG-LS.*pip install pyjpegls"):
        read_dicom(path)
    with pytest.raises(MissingCodecError, match=re.escape('libjpeg (GPLv3; or: pip install -e ".[dicom-gpl]")')):
        read_dicom(bundled("JPGExtended.dcm"))  # 12-bit JPEG: "available" through Pillow, which cannot decode it


def _dicom_folder(root: Path, per_class: int = 12) -> Path:
    """A two-class ImageFolder of DICOM files made from the bundled CT, one (fake) patient each: class 'dense' adds
    300 HU to the stored values; half the files have no suffix (found by their preamble)."""
    src = pydicom.dcmread(bundled("CT_small.dcm"))
    rng = np.random.default_rng(0)
    for c, (name, offset) in enumerate((("plain", 0), ("dense", 300))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ds = src.copy()
            arr = src.pixel_array.astype(np.int32) + offset + rng.integers(-40, 40, src.pixel_array.shape)
            ds.PixelData = np.clip(arr, -32768, 32767).astype(np.int16).tobytes()
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            for tag, value in FAKE_PHI.items():  # on top of the bundled file's own fake patient
                setattr(ds, tag, value)
            ds.PatientID = f"{FAKE_PHI['PatientID']}-{name}{i}"  # one patient per file: splits may put it anywhere
            ds.save_as(root / name / (f"{name}{i}.dcm" if i % 2 else f"{name}{i}"))
    return root


# patient data that must never leave the input files (distinctive, so a byte search cannot match by chance)
FAKE_PHI = {"PatientName": "Doe^Archibald", "PatientID": "PHI-7731-XZ", "PatientBirthDate": "19230415",
            "InstitutionName": "Saint Nowhere Clinic", "ReferringPhysicianName": "Quackenbush^Hieronymus"}  # fmt: skip


def test_a_folder_of_dicom_files_is_a_data_source(tmp_path):
    from reprodistill.config import DataConfig, DicomConfig
    from reprodistill.data import load_data
    from reprodistill.data.dataset import ImageDataset

    folder = _dicom_folder(tmp_path / "scans")
    (tmp_path / "scans" / "plain" / "notes.txt").write_text("not an image")
    data = load_data(DataConfig(source=str(folder), load_size=64, dicom=DicomConfig(window="soft_tissue")))
    assert data.class_names == ["dense", "plain"] and sum(map(len, (data.train, data.val, data.test))) == 24
    assert data.dicom["files"] == 24 and data.dicom["modality"] == {"CT": 24}
    assert data.dicom["decoding"] == {"window": "soft_tissue", "frames": "middle"}
    item = ImageDataset(data.train, 1, (64, 64))[0]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype.is_floating_point is False


def test_a_missing_codec_stops_before_training_with_exit_2(tmp_path):
    """A class folder holding a JPEG-LS file: `distill` stops while reading the data, naming the package, with no
    traceback."""
    from pydicom.pixels import get_decoder

    jls = bundled("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(pydicom.dcmread(jls).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    folder = _dicom_folder(tmp_path / "scans", per_class=4)
    shutil.copy(jls, folder / "plain" / "compressed.dcm")
    proc = subprocess.run(
        [sys.executable, "-m", "reprodistill", "distill", f"data.source={folder}", "methods=[student]",
         "student.name=resnet10t", "train.epochs=1", "train.steps=1", f"out_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install pyjpegls" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").glob("*/student"))  # nothing trained


@pytest.mark.slow
def test_dicom_folder_distill_export_predict_as_a_user_would(tmp_path):
    """From a scratch folder: a two-class folder of DICOM files -> distill -> export -> predict on the .dcm (and
    suffix-less) test files; predict's probabilities equal the run's own per-image test outputs."""
    import csv
    import json

    folder = _dicom_folder(tmp_path / "scans")
    cli = [sys.executable, "-m", "reprodistill"]
    env_run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600)
    proc = subprocess.run([*cli, "distill", f"data.source={folder}", "methods=[student]", "student.name=resnet10t",
                           "data.load_size=32", "data.dicom.window=soft_tissue", "train.epochs=1", "train.steps=3",
                           "train.batch_size=8", "--run-dir", "run"], **env_run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["dicom"]["decoding"]["window"] == "soft_tissue" and data["dicom"]["photometric"] == {"MONOCHROME2": 24}
    assert subprocess.run([*cli, "export", "run"], **env_run).returncode == 0
    config = json.loads((tmp_path / "run" / "export" / "config.json").read_text())
    assert config["dicom"]["decoding"] == {"window": "soft_tissue", "frames": "middle"}
    rows = list(csv.DictReader(open(tmp_path / "run" / "student" / "test_predictions.csv")))
    files = [r["path"] for r in rows]
    assert rows and all(Path(f).parent.parent == folder for f in files)
    proc = subprocess.run([*cli, "predict", "run", *files, "--out", "pred.csv"], **env_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning" not in proc.stderr  # the same modality and photometric interpretation as in training
    predicted = {r["path"]: r for r in csv.DictReader(open(tmp_path / "pred.csv"))}
    names = config["class_names"]
    for r in rows:
        got = predicted[r["path"]]
        assert got["label"] == names[int(r["predicted"])]
        for k, name in enumerate(names):
            assert float(got[f"p_{name}"]) == pytest.approx(float(r[f"p{k}"]), abs=2e-5)
    # another modality than training: predicted, with a warning
    mr = tmp_path / "mr.dcm"
    shutil.copy(bundled("MR_small.dcm"), mr)
    proc = subprocess.run([*cli, "predict", "run", str(mr)], **env_run)
    assert proc.returncode == 0 and "modality MR is not among the training data's ['CT']" in proc.stderr


@pytest.mark.slow
def test_no_patient_data_reaches_any_file_the_run_writes_or_anything_printed(tmp_path):
    """The bundled CT's fake patient (CompressedSamples^CT1, its study UID, institution and date) and the fake PHI
    set on every file go through distill, export and predict (a mismatching modality included, so warnings print);
    none of it may appear in a file under the run folder or on stdout / stderr."""
    folder = _dicom_folder(tmp_path / "scans", per_class=6)
    src = pydicom.dcmread(bundled("CT_small.dcm"))
    mr = pydicom.dcmread(bundled("MR_small.dcm"))
    secrets = [*FAKE_PHI.values(), str(src.PatientName), str(src.StudyInstanceUID), str(src.InstitutionName),
               str(mr.PatientName), str(mr.StudyInstanceUID), "Doe", "Archibald", "1923-04-15"]  # fmt: skip
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "other.dcm")
    cli = [sys.executable, "-m", "reprodistill"]
    kw = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600)
    printed = []
    for args in (
        [
            "distill",
            f"data.source={folder}",
            "methods=[student]",
            "student.name=resnet10t",
            "data.load_size=32",
            "train.epochs=1",
            "train.steps=2",
            "train.batch_size=8",
            "--run-dir",
            "run",
        ],
        ["export", "run"],
        ["predict", "run", str(folder), str(tmp_path / "other.dcm"), "--out", "p.csv"],
    ):
        proc = subprocess.run([*cli, *args], **kw)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed += [proc.stdout, proc.stderr]
    assert "modality MR is not among" in printed[-1]  # the warning path ran
    written = [p for p in tmp_path.rglob("*") if p.is_file() and folder not in p.parents and p.suffix != ".dcm"]
    assert any(p.name == "log.txt" for p in written) and any(p.name == "data.json" for p in written)
    text_files = {".txt", ".json", ".csv", ".md", ".yaml", ".log"}
    for secret in secrets:
        assert all(secret not in text for text in printed), secret
        for p in written:  # weights are random bytes: only secrets too long to match by chance are sought there
            if p.suffix in text_files or len(secret) >= 8:
                assert secret.encode() not in p.read_bytes(), (secret, p)


def _uids(folder: Path) -> dict[str, tuple[str, str]]:
    """SOPInstanceUID -> (class folder, file) of the generated DICOM folder."""
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): (p.parent.name, str(p))
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_label_tables_keyed_by_uid_or_stem_with_several_rows_per_image(tmp_path):
    """SIIM style (ImageId = SOPInstanceUID, " EncodedPixels", one row per mask) and RSNA style (patientId = file
    stem, one row per box): rows per image merged by the declared rule, conflicts stop with the rule to choose."""
    from reprodistill.config import CsvConfig, DataConfig
    from reprodistill.data import load_data

    folder = _dicom_folder(tmp_path / "scans", per_class=6)
    uids = _uids(folder)
    lines = ["ImageId, EncodedPixels,finding"]
    for uid, (cls, _) in uids.items():
        for box in range(2 if cls == "dense" else 1):  # two masks on the dense images
            lines.append(f"{uid},{box} 5,{int(cls == 'dense')}")
    (tmp_path / "siim.csv").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(source=str(tmp_path / "siim.csv"), csv=CsvConfig(label_column="finding", image_root=str(folder)),
                     load_size=32)  # fmt: skip
    data = load_data(cfg)
    every = [*data.train.paths, *data.val.paths, *data.test.paths]
    assert sorted(every) == sorted(f for _, f in uids.values())  # every UID found its file, once
    labels = dict(zip(every, np.concatenate([data.train.labels, data.val.labels, data.test.labels])))
    assert all(labels[f] == int(cls == "dense") for cls, f in uids.values())
    assert any("keyed by uid (ImageId) -> 12 images (6 extra rows merged" in n for n in data.notes)
    # RSNA style: the stem, one row per box, and a reader who disagrees on one image
    rows = ["patientId,Target"] + [f"{Path(f).stem},{int(c == 'dense')}" for c, f in uids.values()]
    first = Path(next(f for c, f in uids.values() if c == "dense")).stem
    (tmp_path / "rsna.csv").write_text("\n".join([*rows, f"{first},0"]) + "\n")
    stem = DataConfig(source=str(tmp_path / "rsna.csv"), csv=CsvConfig(label_column="Target", image_root=str(folder)))
    (folder / "plain" / "copy").mkdir()
    shutil.copy(folder / "plain" / "plain1.dcm", folder / "plain" / "copy" / "plain1.dcm")
    # the files behind a shared key are named, relative to the image root
    with pytest.raises(
        DataError,
        match="'plain1' \\(column patientId\\) names 2 files under .*: plain/copy/plain1.dcm, "
        "plain/plain1.dcm; remove the duplicates",
    ):
        load_data(stem)
    shutil.rmtree(folder / "plain" / "copy")
    with pytest.raises(DataError, match="disagree on the label.*data.csv.rows=first, majority or max"):
        load_data(stem)
    data = load_data(dataclasses.replace(stem, csv=dataclasses.replace(stem.csv, rows="max")))  # any positive reading
    assert sum(map(len, (data.train, data.val, data.test))) == 12
    (tmp_path / "bad.csv").write_text("ImageId,finding\n1.2.3.4.5.6,1\n")
    with pytest.raises(DataError, match="no DICOM file with the SOPInstanceUID '1.2.3.4.5.6'"):
        load_data(DataConfig(source=str(tmp_path / "bad.csv"),
                             csv=CsvConfig(label_column="finding", image_root=str(folder))))  # fmt: skip


def test_patient_grouped_splits_never_split_a_patient(tmp_path):
    from reprodistill.config import CsvConfig, DataConfig
    from reprodistill.data import load_data

    folder = _dicom_folder(tmp_path / "scans", per_class=12)
    rows = ["path,label,patient"]
    for i, p in enumerate(sorted(q for q in folder.rglob("*") if q.is_file())):
        rows.append(f"{p},{p.parent.name},P{i // 3}")  # three images per patient
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = load_data(
        DataConfig(source=str(tmp_path / "t.csv"), csv=CsvConfig(patient_column="patient"), val_fraction=0.2)
    )
    patient = {r.split(",")[0]: r.split(",")[2] for r in rows[1:]}
    sides = [{patient[p] for p in s.paths} for s in (data.train, data.val, data.test)]
    assert all(len(s) for s in sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert any("by patient" in n for n in data.notes)


@pytest.mark.slow
def test_a_run_from_a_label_table_keyed_by_sop_instance_uid(tmp_path):
    """distill -> export -> predict from a CSV keyed by SOPInstanceUID: predictions equal the per-image test
    outputs."""
    import csv

    from reprodistill.config import load_config
    from reprodistill.engine.export import export_run, predict_files
    from reprodistill.engine.run import run

    folder = _dicom_folder(tmp_path / "scans")
    lines = ["ImageId,label"] + [f"{uid},{cls}" for uid, (cls, _) in _uids(folder).items()]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config("default", [f"data.source={tmp_path / 'labels.csv'}", f"data.csv.image_root={folder}",
                                  "methods=[student]", "student.name=resnet10t", "data.load_size=32",
                                  "train.epochs=1", "train.steps=2", "train.batch_size=8"])  # fmt: skip
    run(cfg, run_dir=tmp_path / "run")
    export_run(tmp_path / "run", onnx=False)
    tests = list(csv.DictReader(open(tmp_path / "run" / "student" / "test_predictions.csv")))
    got = {r["path"]: r for r in predict_files(tmp_path / "run", [t["path"] for t in tests])}
    for t in tests:
        assert got[t["path"]]["probabilities"]["dense"] == pytest.approx(float(t["p0"]), abs=2e-5)


def test_enhanced_files_take_the_rescale_from_their_functional_groups(tmp_path):
    """An enhanced multi-frame CT keeps slope / intercept in the functional groups, where pydicom's modality LUT does
    not look: the HU must be the same as with a top-level rescale."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    src = bundled("CT_small.dcm")
    ds = pydicom.dcmread(src)
    del ds.RescaleSlope, ds.RescaleIntercept
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", "-1024", "HU"
    group = Dataset()
    group.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    ds.save_as(tmp_path / "enhanced.dcm")
    _, plain = read_dicom(src, DicomDecoding(window="minmax"))
    _, enhanced = read_dicom(tmp_path / "enhanced.dcm", DicomDecoding(window="minmax"))
    assert enhanced.modality_range == plain.modality_range == [-896.0, 1167.0]


def _pacs_export(root: Path, patients_per_class: int = 4, slices: int = 5) -> dict[str, str]:
    """A PACS / CD export as a hospital hands it over, in class folders: <class>/<patient>/<study>/<series>/IM0000n
    (no suffix), a DICOMDIR at the top of each class folder, one structured report inside a series, and several
    patients of several slices each. Returns {file path: patient id}."""
    src = pydicom.dcmread(bundled("CT_small.dcm"))
    patient_of: dict[str, str] = {}
    rng = np.random.default_rng(1)
    for c, (cls, offset) in enumerate((("plain", 0), ("dense", 300))):
        shutil.copy(bundled(str(Path("dicomdirtests") / "DICOMDIR")), root / cls / "DICOMDIR") if (
            root / cls).mkdir(parents=True) is None else None  # fmt: skip
        for k in range(patients_per_class):
            pid, study = f"{FAKE_PHI['PatientID']}-{c}{k}", pydicom.uid.generate_uid()
            series = root / cls / f"PAT{k:04d}" / "STUDY1" / "SER1"
            series.mkdir(parents=True)
            for j in range(slices):
                ds = src.copy()
                arr = src.pixel_array.astype(np.int32) + offset + rng.integers(-40, 40, src.pixel_array.shape)
                ds.PixelData = np.clip(arr, -32768, 32767).astype(np.int16).tobytes()
                ds.SOPInstanceUID, ds.PatientID, ds.StudyInstanceUID = pydicom.uid.generate_uid(), pid, study
                ds.save_as(series / f"IM{j:05d}")
                patient_of[str(series / f"IM{j:05d}")] = pid
    shutil.copy(bundled("test-SR.dcm"), root / "plain" / "PAT0000" / "STUDY1" / "SER1" / "IM00099")
    return patient_of


def test_a_pacs_export_skips_non_images_stops_on_a_truncated_file_and_keeps_patients_apart(tmp_path):
    from reprodistill.config import DataConfig
    from reprodistill.data import load_data

    patient_of = _pacs_export(tmp_path / "export")
    victim = tmp_path / "export" / "dense" / "PAT0002" / "STUDY1" / "SER1" / "IM00003"
    victim.write_bytes(victim.read_bytes()[:-3000])  # cut in its pixel data
    cfg = DataConfig(source=str(tmp_path / "export"), load_size=32, val_fraction=0.25, test_fraction=0.25)
    # the truncated file stops the data check, named by its path inside the export (every series has an IM00003)
    with pytest.raises(
        DataError,
        match=r"1 image file\(s\) cannot be used: dense/PAT0002/STUDY1/SER1/IM00003: "
        r"truncated pixel data \([\d,]+ of 32,768 bytes\).*data.skip_bad_images=true",
    ):
        load_data(cfg)
    data = load_data(DataConfig(**{**cfg.__dict__, "skip_bad_images": True}))
    notes = "\n".join(data.notes)
    # the DICOMDIRs and the report are skipped and counted where the files are listed, the truncated file by cause
    assert "plain: skipped 2 file(s) that hold no image (1 DICOMDIR, 1 structured report)" in notes
    assert "dense: skipped 1 file(s) that hold no image (1 DICOMDIR)" in notes
    assert "skipped 1 unusable image file(s) (data.skip_bad_images): 1 truncated pixel data" in notes
    assert sum(map(len, (data.train, data.val, data.test))) == 39  # 8 patients x 5 slices, less the truncated one
    # no patient on two sides, although the layout is class folders, and the log says what each split really got
    sides = [{patient_of[p] for p in s.paths} for s in (data.train, data.val, data.test)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert f"no official test split: held out {len(data.test)} of 39 training images" in notes
    assert f"asked 25%), by patient (DICOM PatientID / StudyInstanceUID): {len(sides[2])} of 8 patients" in notes
    assert data.splits_made.startswith("test, val held out of train by patient")
    # grouping off: image by image (a leak the user asked for), said so
    loose = load_data(DataConfig(**{**cfg.__dict__, "skip_bad_images": True, "split_by_patient": False}))
    assert any("stratified by class (data.split_by_patient=false)" in n for n in loose.notes)


def test_grouped_hold_out_is_as_close_to_the_asked_fraction_as_whole_patients_allow():
    from reprodistill.data.splits import grouped_split

    # one class, patients of 20, 30, 25, 18, 15 images (108): 10% is 10.8 images, no patient is that small
    sizes = [20, 30, 25, 18, 15]
    groups = [f"P{k}" for k, n in enumerate(sizes) for _ in range(n)]
    labels = np.zeros(len(groups), dtype=np.int64)
    for seed in range(5):
        keep, hold = grouped_split(labels, groups, 0.10, seed)
        assert len({groups[i] for i in hold}) == 1  # one patient, never a second that overshoots further
    # many small patients: within one patient's size of the target
    groups = [f"P{k}" for k in range(40) for _ in range(3)]
    labels = np.array([k % 2 for k in range(40) for _ in range(3)])
    keep, hold = grouped_split(labels, groups, 0.25, 0)
    assert abs(len(hold) - 30) <= 3 and set(np.unique(labels[hold])) == {0, 1}


@pytest.mark.slow
def test_a_failed_data_check_is_logged_and_does_not_block_the_retry(tmp_path, capsys):
    """The error that stops a run reaches its log.txt; the same --run-dir then takes the corrected command (nothing
    had trained there), which writes splits.csv (no patient data) and the skip counts to data.json."""
    from reprodistill.cli import main

    _pacs_export(tmp_path / "export", patients_per_class=3, slices=4)
    victim = tmp_path / "export" / "plain" / "PAT0001" / "STUDY1" / "SER1" / "IM00002"
    victim.write_bytes(victim.read_bytes()[:700])  # cut in its header
    run = tmp_path / "run"
    base = [
        "distill",
        f"data.source={tmp_path / 'export'}",
        "data.load_size=32",
        "methods=[student]",
        "student.name=resnet10t",
        "train.epochs=1",
        "train.steps=2",
        "train.batch_size=8",
        "--run-dir",
        str(run),
    ]
    assert main(base) == 2
    assert "plain/PAT0001/STUDY1/SER1/IM00002: cut header" in capsys.readouterr().err
    assert "stopped: " in (run / "log.txt").read_text() and "IM00002: cut header" in (run / "log.txt").read_text()
    assert main([*base, "data.skip_bad_images=true"]) == 0
    data = __import__("json").loads((run / "data.json").read_text())
    assert any("1 cut header" in n for n in data["notes"]) and data["splits_made"].startswith("test, val held out")
    splits = (run / "splits.csv").read_text()
    assert splits.startswith("split,file,label\n") and "plain/PAT0000/STUDY1/SER1/IM00000" in splits
    assert "PHI-7731" not in splits and "plain/PAT0001/STUDY1/SER1/IM00002" not in splits  # the skipped file: nowhere
