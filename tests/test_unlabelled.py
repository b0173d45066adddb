"""data.unlabelled=rest: the training images a limited-data run leaves out, used without their labels by the
distillation methods (mixed into every batch at a fixed share) and by nothing else."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprodistill.config import DataConfig, RunConfig, StudentConfig, load_config
from reprodistill.data import load_data
from reprodistill.data.sources import UNLABELLED
from reprodistill.engine.distributed import MixedBatchSampler
from reprodistill.engine.run import run
from reprodistill.errors import ConfigError
from reprodistill.methods import METHODS, MethodContext
from reprodistill.models import create_student


def test_rest_hides_the_labels_of_the_left_out_training_images(small_npz):
    data = load_data(DataConfig(source=str(small_npz), fraction=0.25, unlabelled="rest"))
    pool = data.unlabelled
    assert pool is not None and len(data.train) + len(pool.split) == len(pool.full_train) == 60
    assert (pool.split.labels == UNLABELLED).all()
    both = np.concatenate([pool.labelled_index, pool.unlabelled_index])
    assert sorted(both.tolist()) == list(range(60))  # a partition: no image is both labelled and unlabelled
    assert np.array_equal(pool.full_train.images[pool.labelled_index], data.train.images)
    assert np.array_equal(pool.full_train.images[pool.unlabelled_index], pool.split.images)
    assert any("unlabelled" in n for n in data.notes)
    full = load_data(DataConfig(source=str(small_npz), unlabelled="rest"))
    assert full.unlabelled is None and any("no unlabelled images" in n for n in full.notes)
    with pytest.raises(ConfigError, match="unlabelled_share"):
        load_config("default", ["data.unlabelled_share=1.0"])


def test_a_folder_of_images_is_an_unlabelled_pool(small_npz, tmp_path):
    """data.unlabelled=<folder>: every image file under it (any layout, mixed formats), decoded to the training
    images' size and channels when those are in memory; a missing folder stops at config time."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "pool" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(tmp_path / "pool" / "x.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "pool" / "a" / "y.jpg")
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    data = load_data(DataConfig(source=str(small_npz), unlabelled=str(tmp_path / "pool")))
    pool = data.unlabelled
    assert pool is not None and pool.split.images.shape == (2, 28, 28, 1) and (pool.split.labels == UNLABELLED).all()
    assert np.array_equal(pool.full_train.images[: len(data.train)], data.train.images)
    assert pool.unlabelled_index.tolist() == [60, 61] and pool.labelled_index.tolist() == list(range(60))
    with pytest.raises(ConfigError, match="data.unlabelled=.*no such folder"):
        load_config("default", [f"data.unlabelled={tmp_path / 'missing'}"])


def _epochs(sampler, n):
    out = []
    for e in range(n):
        sampler.set_epoch(e)
        out.append(sampler.plan())
    return out


def test_mixed_batches_keep_a_fixed_unlabelled_share():
    n_l, n_u = 10, 50
    s = MixedBatchSampler(n_l, n_u, batch_size=8, unlabelled_share=0.5, seed=3, steps_per_epoch=5)
    epochs = _epochs(s, 4)
    batches = [idx for e in epochs for idx, _, _ in e]
    assert len(s) == 5 and len(batches) == 20
    for b in batches:
        lab = [i for i in b if i < n_l]
        assert len(b) - len(lab) == 4 and 2 <= len(lab) <= 5  # 4 unlabelled; labelled 4 (a pass of 10: 4, 4, 2)
    labelled_seen = np.bincount([i for b in batches for i in b if i < n_l], minlength=n_l)
    assert labelled_seen.min() >= 1 and labelled_seen.max() - labelled_seen.min() <= 2  # passes, not random draws
    again = MixedBatchSampler(n_l, n_u, batch_size=8, unlabelled_share=0.5, seed=3, steps_per_epoch=5)
    again.set_epoch(2)
    assert again.plan() == epochs[2]  # an epoch depends on (seed, epoch) only: resumable
    # two ranks: their slices make up the one-process batch, and each slice holds labelled images
    ranks = [MixedBatchSampler(n_l, n_u, 8, 0.5, 3, rank=r, world=2, steps_per_epoch=5) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    for one, (a, b) in zip(epochs[1], zip(ranks[0].plan(), ranks[1].plan())):
        assert a[0] + b[0] == one[0] and any(i < n_l for i in a[0]) and any(i < n_l for i in b[0])
    # without a step budget an epoch is one pass over the labelled images
    plain = MixedBatchSampler(n_l, n_u, batch_size=8, unlabelled_share=0.75, seed=0)
    (e,) = _epochs(plain, 1)
    assert sorted(i for idx, _, _ in e for i in idx if i < n_l) == list(range(n_l))
    assert all(sum(i >= n_l for i in idx) == 6 for idx, _, _ in e)


def test_task_loss_skips_unlabelled_images():
    cfg = RunConfig(methods=["student"])
    student = create_student(StudentConfig(name="resnet10t"), num_classes=3, default_size=(28, 28))
    w = torch.tensor([1.0, 2.0, 0.5])
    method = METHODS.get("student")(MethodContext(cfg=cfg, num_classes=3, student=student, class_weights=w), None)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, UNLABELLED, 2, 1, UNLABELLED, 0])
    known = labels != UNLABELLED
    expected = F.cross_entropy(logits[known], labels[known], weight=w)
    torch.testing.assert_close(method.task_loss(logits, labels), expected)
    none = method.task_loss(logits, torch.full((6,), UNLABELLED))
    none.backward()  # a slice without labels still backpropagates (zero), e.g. on one rank
    assert float(none.detach()) == 0.0 and logits.grad is not None and not logits.grad.any()


@pytest.mark.slow
def test_only_distillation_methods_train_on_unlabelled_images(small_npz, tmp_path):
    """student is unchanged by data.unlabelled=rest (it cannot use them); kd's student changes (its KD term sees
    the teacher's outputs on them) while its probe teacher is fitted on the same labelled images as before."""
    fm = tmp_path / "fm.pt"
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), fm)
    common = [
        f"data.source={small_npz}", "data.fraction=0.25", "methods=[student,kd]", "student.name=resnet10t",
        f"teacher.name={fm}", "teacher.arch=resnet10t", "teacher.image_size=32", "train.epochs=2", "train.steps=6",
        "train.batch_size=8", "train.device=cpu", f"teacher.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    results = {}
    for mode in ("none", "rest"):
        cfg = load_config("default", [*common, f"data.unlabelled={mode}"])
        res = run(cfg, run_dir=tmp_path / mode)
        results[mode] = {r.method: r for r in res.results}
    info = json.loads((tmp_path / "rest" / "data.json").read_text())
    assert info["unlabelled"] == 60 - info["sizes"]["train"] == 44  # 60 training images, 8 per class labelled
    s_none, s_rest = results["none"]["student"].test, results["rest"]["student"].test
    assert s_none["auc"] == s_rest["auc"] and s_none["confusion_matrix"] == s_rest["confusion_matrix"]
    k_none, k_rest = results["none"]["kd"].test, results["rest"]["kd"].test
    assert k_none["extra"]["probed_fm"]["auc"] == pytest.approx(k_rest["extra"]["probed_fm"]["auc"], abs=1e-6)
    first = [
        np.genfromtxt(tmp_path / mode / "kd" / "metrics.csv", delimiter=",", names=True)["train_loss"][0]
        for mode in ("none", "rest")
    ]
    assert first[0] != pytest.approx(first[1], rel=1e-6)  # different batches: unlabelled images were trained on
    # with cached augmented views the unlabelled images get theirs too (sliced from the whole split's FM passes)
    cfg = load_config("default", [*common, "data.unlabelled=rest", "teacher.views=2", "methods=[kd]"])
    res = run(cfg, run_dir=tmp_path / "views")
    assert res.results[0].test["extra"]["probed_fm"]["auc"] == pytest.approx(k_rest["extra"]["probed_fm"]["auc"])
    # cache entries: the labelled subset, val, test (none); the whole training split (rest); its second view (views)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 5


def test_tdmr_without_a_prompt_reads_the_shared_full_split_pass(small_npz, tmp_path):
    """tdmr prompt=none with data.unlabelled=rest: stage 1 reads the engine's pass over the whole training split
    (one cache entry, shared with kd and by every subset seed), not a pass of its own over each seed's
    labelled + unlabelled order; its transfer cost counts that pass once."""
    fm = tmp_path / "fm.pt"
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), fm)
    common = [
        f"data.source={small_npz}", "data.fraction=0.25", "data.unlabelled=rest", "methods=[kd,tdmr]",
        "student.name=resnet10t", f"teacher.name={fm}", "teacher.arch=resnet10t", "teacher.image_size=32",
        "train.epochs=1", "train.steps=2", "train.batch_size=8", "train.device=cpu",
        f"teacher.cache_dir={tmp_path / 'cache'}", "method_options.tdmr.prompt=none",
        "method_options.tdmr.stage1_epochs=1", "method_options.tdmr.stage1_batch_size=8",
    ]  # fmt: skip
    for seed in (0, 1):
        res = run(load_config("default", [*common, f"data.subset_seed={seed}"]), run_dir=tmp_path / str(seed))
        kd, tdmr = res.results
        assert "reprogrammed_fm" in tdmr.test["extra"]  # stage 1 trained and was scored
        assert tdmr.fm_feature_s == kd.fm_feature_s > 0  # the shared pass is counted in tdmr's cost, as in kd's
    # the whole training split, val, test: nothing per seed (a per-seed pass would add one entry for each seed)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_tdmr_without_a_prompt_runs_no_fm_on_its_training_batches(small_npz, tmp_path):
    """Stage 2 of tdmr prompt=none reads its stage-1 targets by index, never a batch's FM features: under
    teacher.features=online the FM sees the same images however many steps train (stage 1's pass and scoring only),
    and with cached features and teacher.views=2 no augmented view is computed for it."""
    import timm

    from reprodistill.features.run_features import build_teacher

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), tmp_path / "fm.pt")
    common = [
        f"data.source={small_npz}", "methods=[tdmr]", "student.name=resnet10t", f"teacher.name={tmp_path / 'fm.pt'}",
        "teacher.arch=resnet10t", "teacher.image_size=32", "train.epochs=1", "train.batch_size=8", "train.device=cpu",
        "method_options.tdmr.prompt=none", "method_options.tdmr.stage1_epochs=1",
        "method_options.tdmr.stage1_batch_size=8",
    ]  # fmt: skip
    fm_images = {}
    for steps in (2, 6):
        cfg = load_config("default", [*common, "teacher.features=online", f"train.steps={steps}",
                                      f"teacher.cache_dir={tmp_path / f'cache{steps}'}"])  # fmt: skip
        teacher, seen = build_teacher(cfg, torch.device("cpu")), []
        teacher.register_forward_pre_hook(lambda _module, args: seen.append(len(args[0])))
        run(cfg, run_dir=tmp_path / f"online{steps}", teacher=teacher)
        fm_images[steps] = sum(seen)
    assert fm_images[2] == fm_images[6] > 0  # 4 more training batches of 8, and not one more FM image

    cache = f"teacher.cache_dir={tmp_path / 'c'}"
    cached = load_config("default", [*common, "train.steps=2", "teacher.views=2", cache])
    run(cached, run_dir=tmp_path / "cached")
    assert len(list((tmp_path / "c").glob("*.npy"))) == 3  # train, val, test: no second view of the train split
