"""torchrun with 2 gloo processes on CPU gives the same training as one process (plain DDP, sliced global batches)."""

import csv
import json
import socket
import subprocess
import sys

import pytest
import torch

from reprodistill.engine.distributed import GlobalBatchSampler, shard_indices


def test_rank_slices_of_global_batches_partition_the_single_process_batches():
    one = GlobalBatchSampler(23, 8, seed=3, shuffle=True)
    ranks = [GlobalBatchSampler(23, 8, seed=3, shuffle=True, rank=r, world=2) for r in range(2)]
    for epoch in (0, 1):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        plans = [r.plan() for r in ranks]
        for step, (batch, offset, total) in enumerate(one.plan()):
            assert offset == 0 and total == len(batch)
            (i0, o0, t0), (i1, o1, t1) = plans[0][step], plans[1][step]
            assert i0 + i1 == batch and o0 == 0 and o1 == len(i0) and t0 == t1 == total
    one.set_epoch(0)
    first = one.plan()
    one.set_epoch(1)
    assert one.plan() != first  # reshuffled per epoch
    assert shard_indices(10, 0, 3) + shard_indices(10, 1, 3) + shard_indices(10, 2, 3) == list(range(10))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, small_npz):
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    args = [
        "distill", f"data.source={small_npz}", "methods=[student,rd]",
        # a student without BatchNorm: its training does not depend on how the global batch is sliced
        "student.name=vit_tiny_patch16_224", "student.image_size=32",
        f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t", "teacher.image_size=64",
        "train.epochs=2", "train.steps=null", "train.batch_size=16", "train.class_weights=none",
        "train.augment_flip=true",
    ]  # fmt: skip
    single = subprocess.run(
        [sys.executable, "-m", "reprodistill", *args, f"--run-dir={tmp_path / 'one'}",
         f"teacher.cache_dir={tmp_path / 'cache1'}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         "-m", "reprodistill", *args, f"--run-dir={tmp_path / 'two'}", f"teacher.cache_dir={tmp_path / 'cache2'}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "distributed: 2 processes" in ddp.stderr
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2

    def history(run, method):
        return list(csv.DictReader(open(tmp_path / run / method / "metrics.csv")))

    # the student: the same optimisation steps, so the same losses and validation metrics up to float order
    for a, b in zip(history("one", "student"), history("two", "student"), strict=True):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-3)
        for k in ("val_accuracy", "val_auc", "val_loss"):
            assert float(b[k]) == pytest.approx(float(a[k]), abs=2e-3), k
    one = json.loads((tmp_path / "one" / "student" / "test_metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "student" / "test_metrics.json").read_text())
    assert two["auc"] == pytest.approx(one["auc"], abs=2e-3)
    assert sum(two["per_class"]["support"]) == 40  # gathered over both ranks, no image twice or missing
    # RD has BatchNorm in phi (per-slice statistics), so only a looser match; the FM pass ran once: 3 cache entries
    rd_one, rd_two = history("one", "rd"), history("two", "rd")
    assert float(rd_two[-1]["train_loss"]) == pytest.approx(float(rd_one[-1]["train_loss"]), rel=0.2)
    assert len(list((tmp_path / "cache2").glob("*.npy"))) == 3
    assert (tmp_path / "two" / "results.csv").is_file() and not list((tmp_path / "two").glob("**/*.tmp"))
