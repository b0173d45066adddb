"""One method of a run, start to finish: prepare, train on the shared loop (or keep the solved state), reload the
reported checkpoint, test it, measure what it deploys, and store the result in the run folder."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import torch

from reprodistill.config import RunConfig
from reprodistill.engine import distributed
from reprodistill.engine.loop import FitResult, Predictions, calibration, fit, metrics_of, predict
from reprodistill.engine.profile import count_params, flops, latency_ms, peak_rss_mb
from reprodistill.engine.results import MethodResult
from reprodistill.engine.run_dir import RunDir
from reprodistill.engine.sanity import prediction_flags
from reprodistill.errors import ReprodistillError
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import Method
from reprodistill.util.checkpoint import load_checkpoint, save_checkpoint, write_csv
from reprodistill.util.metrics import SCALAR_METRICS

log = logging.getLogger("reprodistill")


def measure_deployed(method: Method, device: torch.device) -> tuple[int, float, float]:
    """(params, GFLOPs per image, CPU-batch-1 latency in ms) of what the method deploys."""
    model, spec = method.deployed(), method.deployed_spec()
    x = torch.zeros(1, spec.channels, *spec.size, device=device)
    was_training = method.training
    method.eval()
    result = count_params(model), flops(model, x) / 1e9, latency_ms(model, x)
    method.train(was_training)
    return result


def train_and_test(
    method: Method,
    splits: dict[str, FeatureSplit],
    cfg: RunConfig,
    folder: RunDir,
    device: torch.device,
    resume: bool,
    fm_feature_s: float,
    prior_s: float = 0.0,
) -> MethodResult:
    """Train ``method`` on ``splits['train']`` and test its reported checkpoint (see ``train.select_metric``);
    ``fm_feature_s`` is the FM pass its cached features cost, ``prior_s`` what the runs it distils cost (a
    co-teacher's training), counted in its preparation. With ``resume`` a method that had finished in ``folder`` is
    kept, not retrained."""
    main, name = distributed.is_main(), method.name
    out = folder.method(name)
    if resume and (done := folder.finished(name)) is not None:
        log.info("%s: already finished in %s, kept", name, out.path)
        return done
    log.info("%s: training (%d trainable params)", name, sum(p.numel() for p in method.parameters() if p.requires_grad))
    if method.caveat:
        log.warning("%s is %s", name, method.caveat)
    t_prep = time.perf_counter()
    method.prepare(splits["train"], device, val=splits["val"])
    prepare_s = (method.prepare_s if method.prepare_s is not None else time.perf_counter() - t_prep) + prior_s
    if main and (curve := method.prepare_curve()):
        write_csv(out.prepare_curve, curve)
    if method.loop_training:
        fitted = fit(method, splits["train"], splits["val"], cfg.train, out.path, device, resume=resume)
    else:  # prepare() solved it (e.g. a converged probe): that state is the result
        fitted = FitResult(best_epoch=0, best_score=math.nan)
        if main:
            out.path.mkdir(parents=True, exist_ok=True)
            save_checkpoint(out.best, {"method": method.state_dict(), "epoch": -1, "score": math.nan})
        distributed.barrier()
    val, test = _test_best(method, splits, cfg, folder, device, fitted.best_epoch)
    params, gflops, lat = measure_deployed(method, device)
    result = MethodResult(
        name,
        test,
        fitted.best_epoch,
        fitted.train_time_s,
        params,
        gflops,
        lat,
        peak_rss_mb(),
        fm_feature_s,
        prepare_s,
        val,
    )
    return _store(result, folder, cfg.train.keep_last)


def retest(
    method: Method, splits: dict[str, FeatureSplit], cfg: RunConfig, folder: RunDir, device: torch.device
) -> MethodResult:
    """Test a finished method's stored best.pt again with the current evaluation code, without training.

    Only the validation and test metrics are replaced; the training figures (time, best epoch, latency, cost) stay
    as measured when it trained. ``prepare`` runs first because a method may rebuild state there that its state
    dict does not hold (seeded, so it is the state it trained with)."""
    done = folder.finished(method.name)
    if done is None:
        raise ReprodistillError(
            f"cannot re-test {method.name!r}: it has not finished in {folder.path} (train it first: rerun without "
            "--retest)"
        )
    method.prepare(splits["train"], device, val=splits["val"])
    val, test = _test_best(method, splits, cfg, folder, device, done.best_epoch)
    return _store(dataclasses.replace(done, test=test, val=val), folder, keep_last=True)


def _test_best(
    method: Method,
    splits: dict[str, FeatureSplit],
    cfg: RunConfig,
    folder: RunDir,
    device: torch.device,
    best_epoch: int,
) -> tuple[dict, dict]:
    """Load the method's reported checkpoint (best.pt) and test it: (the validation scalars the report reads, with
    the other branches' AUC and balanced accuracy under 'extra'; the test metrics with the other branches, the
    validation-fitted calibration and ``best_epoch``)."""
    method.load_state_dict(load_checkpoint(folder.method(method.name).best)["method"])
    val = predict(method, splits["val"], cfg.train, device, extra=True)
    test = predict(method, splits["test"], cfg.train, device, extra=True)
    test_metrics = metrics_of(test)
    test_metrics["calibration"] = calibration(val, test, method.class_weights)
    test_metrics["best_epoch"] = best_epoch
    if distributed.is_main():
        temperature, out = test_metrics["calibration"]["temperature"], folder.method(method.name)
        write_csv(out.test_predictions, prediction_rows(test, splits["test"], temperature))
        write_csv(out.val_predictions, prediction_rows(val, splits["val"], temperature))
    val_metrics = metrics_of(val)
    scalars: dict[str, Any] = {k: val_metrics[k] for k in ("loss", *SCALAR_METRICS)}
    if branches := val_metrics.get("extra"):  # a teacher branch's validation score, beside its test score
        scalars["extra"] = {b: {k: m[k] for k in ("auc", "balanced_accuracy")} for b, m in branches.items()}
    return scalars, test_metrics


def prediction_rows(preds: Predictions, split: FeatureSplit, temperature: float) -> list[dict[str, Any]]:
    """One row per image of ``split``: its index, file (when the split has files), true and predicted class index and
    the probabilities ``predict`` would print (softmax of the logits over the validation-fitted temperature)."""
    log_probs, labels = preds[0]["model"], preds[1]
    probs = torch.from_numpy(log_probs / temperature).softmax(-1).numpy()
    paths = split.dataset.split.paths
    return [
        {"index": i, "path": paths[i] if paths else "", "label": int(y), "predicted": int(p.argmax()),
         **{f"p{k}": f"{v:.6f}" for k, v in enumerate(p)}}
        for i, (y, p) in enumerate(zip(labels, probs))
    ]  # fmt: skip


def _store(result: MethodResult, folder: RunDir, keep_last: bool) -> MethodResult:
    """Write the method's result files (rank 0), wait for every rank, and log the result."""
    if distributed.is_main():
        folder.write_method_result(result, keep_last)
    distributed.barrier()
    _log_result(result)
    return result


def _log_result(r: MethodResult) -> None:
    t = r.test
    log.info(
        "%s: test acc %.4f bal-acc %.4f macro-F1 %.4f AUC %.4f (best epoch %d)",
        r.method, t["accuracy"], t["balanced_accuracy"], t["macro_f1"], t["auc"], r.best_epoch,
    )  # fmt: skip
    if c := t.get("calibration"):
        log.info(
            "%s: softmax temperature %.3g fitted on validation: test loss %.4f -> %.4f (export and predict apply it)",
            r.method, c["temperature"], c["test_loss"], c["test_loss_calibrated"],
        )  # fmt: skip
    for flag in prediction_flags(t["confusion_matrix"]):
        log.warning("%s: %s on the test split: a degenerate predictor, not a result", r.method, flag)
    for branch, m in t.get("extra", {}).items():
        log.info(
            "%s: %s branch (not deployed): test acc %.4f bal-acc %.4f AUC %.4f",
            r.method, branch, m["accuracy"], m["balanced_accuracy"], m["auc"],
        )  # fmt: skip
