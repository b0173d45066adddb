"""Step budgets and the batches they are made of: equal optimiser steps at every data size, no batch of one."""

import torch

from reprodistill.config import TrainConfig
from reprodistill.engine.distributed import GlobalBatchSampler


def _epochs(sampler, n_epochs):
    out = []
    for e in range(n_epochs):
        sampler.set_epoch(e)
        out.append([idx for idx, _, _ in sampler.plan()])
    return out


def test_step_budget_streams_consecutive_shuffled_passes():
    n, bs, spe = 10, 4, 5  # 3 batches per pass (4, 4+2 merged? no: 4, 4, 2), 5 steps per epoch
    s = GlobalBatchSampler(n, bs, seed=3, shuffle=True, steps_per_epoch=spe)
    epochs = _epochs(s, 3)
    assert [len(e) for e in epochs] == [spe] * 3 and len(s) == spe
    stream = [b for e in epochs for b in e]
    per_pass = 3
    for p in range(len(stream) // per_pass):
        seen = sorted(i for b in stream[p * per_pass : (p + 1) * per_pass] for i in b)
        assert seen == list(range(n))  # every pass is one permutation of the data
    assert stream[:per_pass] != stream[per_pass : 2 * per_pass]  # reshuffled per pass
    again = GlobalBatchSampler(n, bs, seed=3, shuffle=True, steps_per_epoch=spe)
    again.set_epoch(2)
    assert [idx for idx, _, _ in again.plan()] == epochs[2]  # an epoch depends on (seed, epoch) only: resumable


def test_without_a_budget_an_epoch_is_one_pass():
    s = GlobalBatchSampler(10, 4, seed=0, shuffle=True)
    (e,) = _epochs(s, 1)
    assert sorted(i for b in e for i in b) == list(range(10)) and len(s) == 3


def test_final_batch_of_one_is_merged_into_the_one_before():
    s = GlobalBatchSampler(9, 4, seed=0, shuffle=True)  # 4 + 4 + 1
    sizes = [len(b) for b in _epochs(s, 1)[0]]
    assert sizes == [4, 5] and len(s) == 2
    two = GlobalBatchSampler(9, 4, seed=0, shuffle=True, rank=1, world=2)  # each rank needs 2 images: 4 + 5
    assert all(len(b) >= 2 for b in _epochs(two, 1)[0])


def test_equal_steps_at_every_fraction(small_npz, tmp_path):
    from reprodistill.config import DataConfig
    from reprodistill.data import ImageDataset, load_data
    from reprodistill.engine.loop import train_loader
    from reprodistill.features.split import FeatureSplit

    cfg = TrainConfig(epochs=4, steps=40, batch_size=16)
    steps = []
    for fraction in (1.0, 0.25):
        data = load_data(DataConfig(source=str(small_npz), fraction=fraction))
        _, sampler = train_loader(FeatureSplit(ImageDataset(data.train, 3, (28, 28))), cfg, torch.device("cpu"))
        steps.append(len(sampler) * cfg.epochs)
    assert steps == [40, 40]


def test_budget_is_logged_in_words_with_a_warning_when_out_of_proportion(caplog, monkeypatch):
    """The 24-image folder with the preset's 300 steps of batch 128: the budget line, the passes warning, then the
    estimate after the first steps and a warning when it runs past an hour."""
    import logging

    from reprodistill.config import TrainConfig
    from reprodistill.engine import budget as budget_mod
    from reprodistill.engine.budget import BudgetLog

    clock = iter([0.0, 100.0])  # read after the first step and at the estimate, 5 steps later: 20 s a step
    monkeypatch.setattr(budget_mod.time, "perf_counter", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="reprodistill")
    b = BudgetLog("student", TrainConfig(epochs=1, steps=300, batch_size=128), 300, 18, 0, 0.5, (224, 224))
    text = caplog.text
    assert "budget 300 optimiser steps in 1 evaluation round(s), 128 images per step: 2133 passes over the 18" in text
    assert "input 224x224 px" in text and "train.steps=7 gives ~50 passes" in text
    for left in range(299, 293, -1):
        b.step(left)
    assert "20.00 s per step here: ~1.6 h for the remaining 294 steps" in caplog.text
    assert "lower train.steps, data.load_size or student.image_size, or train on a GPU" in caplog.text
    caplog.clear()
    b.step(293)
    assert caplog.text == ""  # the estimate is given once
    caplog.clear()
    # BreastMNIST 10%: 349 passes over the 55 labelled images, 39 over the 491 unlabelled ones the budget is for
    mixed = BudgetLog("kd", TrainConfig(epochs=15, steps=300, batch_size=128), 20, 55, 491, 0.5, (28, 28))
    assert mixed.total == 300
    assert "(64 labelled + 64 unlabelled): 349 passes over the 55 labelled images and 39 over the 491 unlabelled" in (
        caplog.text
    )
    assert "far more" not in caplog.text
    BudgetLog("fixmatch", TrainConfig(epochs=15, steps=3000, batch_size=128), 200, 55, 491, 0.5, None)
    assert "391 passes over 491 unlabelled images is far more" in caplog.text and "train.steps=383" in caplog.text
