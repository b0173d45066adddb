"""The teacher-feature cache: hits, misses on any change, and recovery from corrupt entries."""

import logging

import torch

from reprodistill.config import DataConfig
from reprodistill.data import ImageDataset, load_data
from reprodistill.features.cache import cached_features
from reprodistill.features.extract import extract_features


def test_cache_hit_miss_and_corruption(tiny_teacher, small_npz, tmp_path, caplog):
    teacher = tiny_teacher(32)
    data = load_data(DataConfig(source=str(small_npz)))
    ds = ImageDataset(data.test, data.channels, data.load_size)
    calls = []

    def compute(kind="pooled", d=ds):
        calls.append(kind)
        return extract_features(teacher, d, 16, torch.device("cpu"), kind=kind)

    caplog.set_level(logging.INFO, logger="reprodistill")
    first = cached_features(teacher, ds, str(tmp_path), compute)
    again = cached_features(teacher, ds, str(tmp_path), compute)
    assert calls == ["pooled"] and torch.equal(first, again) and first.dtype == torch.float16
    assert torch.allclose(first.float(), compute().float(), atol=2e-3)  # fp16 rounding only
    maps = cached_features(teacher, ds, str(tmp_path), lambda: compute("map"), kind="map")
    assert maps.shape == (len(ds), 512, 1, 1)

    other = ImageDataset(data.val, data.channels, data.load_size)  # different content -> different entry
    cached_features(teacher, other, str(tmp_path), lambda: compute(d=other))
    assert calls[-1] == "pooled" and len(list(tmp_path.glob("*.npy"))) == 3

    for npy in tmp_path.glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:100])  # truncate every entry
    n = len(calls)
    again = cached_features(teacher, ds, str(tmp_path), compute)
    assert len(calls) == n + 1 and torch.equal(again, first)
    assert "recomputing" in caplog.text


def test_online_teacher_mode_runs_the_fm_every_step(tiny_teacher, small_npz, tmp_path):
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    tiny_teacher(32)  # writes tmp_path/fm.pt
    common = [
        f"data.source={small_npz}",
        "methods=[rd]",
        f"teacher.name={tmp_path / 'fm.pt'}",
        "teacher.arch=resnet10t",
        "teacher.image_size=32",
        "student.name=resnet10t",
        "train.epochs=1",
        "train.steps=null",
        "train.batch_size=16",
        f"teacher.cache_dir={tmp_path / 'cache'}",
    ]
    online = run(load_config("default", common + ["teacher.features=online"]), run_dir=tmp_path / "online")
    assert online.teacher_feature_time_s == 0.0 and not (tmp_path / "cache").exists()
    cached = run(load_config("default", common), run_dir=tmp_path / "cached")
    assert cached.teacher_feature_time_s > 0.0 and len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert 0.0 <= online.results[0].test["auc"] <= 1.0


def test_a_second_process_waits_for_an_entry_being_computed_instead_of_recomputing(tiny_teacher, small_npz, tmp_path):
    import threading
    import time

    teacher = tiny_teacher(32)
    data = load_data(DataConfig(source=str(small_npz)))
    ds = ImageDataset(data.test, data.channels, data.load_size)
    calls, results = [], {}
    started = threading.Event()

    def slow_compute():
        calls.append(1)
        started.set()
        time.sleep(1.0)  # the other caller arrives while this FM pass runs
        return extract_features(teacher, ds, 16, torch.device("cpu"))

    def worker(tag):
        results[tag] = cached_features(teacher, ds, str(tmp_path), slow_compute)

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    started.wait(10)
    second = threading.Thread(target=worker, args=("second",))  # its own lock descriptor, as another process has
    second.start()
    first.join()
    second.join()
    assert len(calls) == 1 and torch.equal(results["first"], results["second"])
