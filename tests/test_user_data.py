"""A user's own data: class names from the source, 16-bit / float / palette / RGBA images, one-class refusal,
file modes that follow the umask."""

import os

import numpy as np
import pytest
from PIL import Image

from reprodistill.config import DataConfig, load_config
from reprodistill.data import load_data
from reprodistill.data.sources import load_image_file
from reprodistill.engine.checkpoint import write_text
from reprodistill.errors import DataError


def _folder(root, classes, n=4, size=16):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_class_names_come_from_the_data_never_from_a_preset(tmp_path):
    src = _folder(tmp_path / "pets", ["cat", "dog", "fox"], n=12)
    for preset in ("default", "bench", "pneumonia-bench"):
        cfg = load_config(preset, [f"data.source={src}"])
        assert load_data(cfg.data).class_names == ["cat", "dog", "fox"]


def test_medmnist_sets_carry_their_own_label_names(pneumonia_path, breast_path):
    pn = load_data(DataConfig(source="medmnist:pneumoniamnist", root=str(pneumonia_path.parent)))
    br = load_data(DataConfig(source="medmnist:breastmnist", root=str(breast_path.parent)))
    assert pn.class_names == ["normal", "pneumonia"] and br.class_names == ["malignant", "normal, benign"]


def test_one_class_training_data_is_refused_up_front(tmp_path):
    src = _folder(tmp_path / "one", ["pneumonia"], n=20)
    with pytest.raises(DataError, match="one class only"):
        load_data(DataConfig(source=str(src)))


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "RGBA", "LA"])
def test_high_bit_depth_and_other_modes_keep_their_contrast(tmp_path, mode):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    if mode == "I;16":
        im = Image.fromarray((ramp * 65535).astype(np.uint16))  # a 16-bit X-ray: PIL's convert('L') made it white
    elif mode == "I":
        im = Image.fromarray((ramp * 4095).astype(np.int32), mode="I")  # 12-bit values stored in 32-bit ints
    elif mode == "F":
        im = Image.fromarray((ramp * 3000.0 - 1000.0).astype(np.float32), mode="F")  # e.g. Hounsfield units
    else:
        im = Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I", "F") else "x.png")
    im.save(path)
    arr = load_image_file(str(path), 1, (64, 64))[..., 0].astype(float)
    assert arr.min() <= 10 and arr.max() >= 245  # the full range survives: not all white, not all black
    assert np.corrcoef(arr.ravel(), ramp.ravel())[0, 1] > 0.99


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "x")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644  # mkstemp alone gave 0600
    finally:
        os.umask(old)
