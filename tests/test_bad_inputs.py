"""Property tests: random bad inputs to the data loaders end in a clear DataError (or load), never a crash."""

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprodistill.config import DataConfig
from reprodistill.data import ImageDataset, load_data
from reprodistill.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load_all(source: str) -> None:
    data = load_data(DataConfig(source=source, load_size=8))
    for split in (data.train, data.val, data.test):
        ds = ImageDataset(split, data.channels, data.load_size)
        for i in range(len(ds)):
            ds[i]


def _expect_clear_error_or_success(source: str) -> None:
    try:
        _load_all(source)
    except DataError as e:
        assert str(e) and "\n" not in str(e).strip()


@SETTINGS
@given(payload=st.binary(max_size=400))
def test_random_bytes_as_npz(tmp_path, payload):
    path = tmp_path / "x.npz"
    path.write_bytes(payload)
    _expect_clear_error_or_success(str(path))


@SETTINGS
@given(
    n=st.integers(0, 6),
    shape=st.sampled_from([(4, 4), (4, 4, 1), (4, 4, 3), (4, 4, 2), (4,), ()]),
    dtype=st.sampled_from([np.uint8, np.float32, np.int64]),
    labels=st.lists(st.integers(-2, 3), max_size=8),
    label_shape=st.sampled_from(["flat", "column", "matrix"]),
)
def test_malformed_npz_arrays(tmp_path, n, shape, dtype, labels, label_shape):
    images = np.zeros((n, *shape), dtype=dtype)
    lab = np.asarray(labels, dtype=np.int64)
    if label_shape == "column":
        lab = lab[:, None]
    elif label_shape == "matrix" and len(lab) % 2 == 0:
        lab = lab.reshape(-1, 2)
    buf = io.BytesIO()
    np.savez(buf, train_images=images, train_labels=lab)
    path = tmp_path / "m.npz"
    path.write_bytes(buf.getvalue())
    _expect_clear_error_or_success(str(path))


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a.png", "missing.png", "", "../a.png", "bad.png"]),
            st.sampled_from(["0", "1", "cat", ""]),
            st.sampled_from(["train", "val", "test", "oops", ""]),
        ),
        max_size=12,
    ),
    header=st.sampled_from(["path,label,split", "path,label", "file,y", ""]),
)
def test_random_csv_files(tmp_path, rows, header):
    from PIL import Image

    Image.fromarray(np.full((6, 6), 100, dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    lines = [header] + [",".join(r[: header.count(",") + 1]) for r in rows]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    _expect_clear_error_or_success(str(tmp_path / "d.csv"))


def test_random_bytes_checkpoint_is_called_invalid_and_unsafe_loading_never_suggested(tmp_path):
    import fractions
    import os

    from reprodistill.errors import WeightsError
    from reprodistill.models.pretrained import read_state_dict
    from reprodistill.util.checkpoint import load_checkpoint

    for i in range(5):  # random bytes trip different unpickler errors
        bad = tmp_path / f"rand{i}.pt"
        bad.write_bytes(os.urandom(3000))
        for load in (load_checkpoint, read_state_dict):
            with pytest.raises(WeightsError) as e:
                load(bad)
            assert "not a valid checkpoint file" in str(e.value) and "weights_only" not in str(e.value)
    code = tmp_path / "code.pt"
    torch.save({"x": fractions.Fraction(1, 2)}, code)
    with pytest.raises(WeightsError, match="refused for safety") as e:
        load_checkpoint(code)
    assert "weights_only" not in str(e.value)


def test_a_damaged_or_missing_json_record_says_what_to_do(tmp_path):
    """A damaged record is to be deleted; a missing one (a cell folder moved while a bench ran) is to be redone by
    rerunning, not 'deleted'."""
    from reprodistill.errors import ReprodistillError
    from reprodistill.util.checkpoint import read_json

    bad = tmp_path / "result.json"
    bad.write_text('{"auc": 0.8')
    with pytest.raises(ReprodistillError, match="unreadable .*delete it to redo that step"):
        read_json(bad)
    with pytest.raises(ReprodistillError, match="missing .*rerun the command") as e:
        read_json(tmp_path / "gone.json")
    assert "delete" not in str(e.value)
