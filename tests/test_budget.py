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
