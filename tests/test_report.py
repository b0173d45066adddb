"""Sanity rows and statistics of every report: degenerate-predictor flags, majority class, published reference,
paired differences with their t-interval, selection on validation only."""

import dataclasses
import json
import math

import numpy as np
import pytest

from reprodistill.bench.report import paired_markdown, results_markdown
from reprodistill.bench.rows import COST_COLUMNS, BenchRow
from reprodistill.bench.stats import best_student_cell, format_paired, paired_difference
from reprodistill.engine.sanity import majority_metrics, prediction_flags, published_line
from reprodistill.methods import METHODS
from reprodistill.util.metrics import SCALAR_METRICS


def test_one_class_and_missing_class_flags():
    assert prediction_flags([[0, 234], [0, 390]])[0].startswith("ONE-CLASS: 100% of predictions are class 1")
    assert prediction_flags([[200, 34], [40, 350]]) == []
    three = [[10, 0, 0], [0, 10, 0], [5, 5, 0]]  # class 2 is never predicted
    assert prediction_flags(three) == ["never predicts classes [2]"]


def test_majority_row_equals_a_constant_predictor():
    m = majority_metrics(train_counts=[1214, 3494], test_support=[234, 390])
    assert m["accuracy"] == pytest.approx(390 / 624)  # the 0.625 the old quick job printed for three methods
    assert m["balanced_accuracy"] == 0.5 and m["auc"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 * 0.625 / 1.625) / 2)


def test_published_reference_is_labelled_and_only_for_known_sets():
    line = published_line("medmnist:pneumoniamnist")
    assert "not measured here" in line and "0.944" in line and "0.854" in line
    assert "0.901" in published_line("../shared/data/breastmnist.npz")
    assert published_line("/data/xrays") == ""


def _row(method, seed, auc, deploys="student", fraction=0.1, flags="", method_dir="", **extra):
    """A bench row with every test metric and the validation AUC at ``auc``; ``val_<m>=`` and cost keywords
    override; the family is the registered method's (the name before a variant's suffix)."""
    base = method.split("@")[0].split("-")[0]
    costs = {k: 1 for k in COST_COLUMNS} | {k: v for k, v in extra.items() if k in COST_COLUMNS}
    val = {k: auc for k in SCALAR_METRICS} | {k[4:]: v for k, v in extra.items() if k.startswith("val_")}
    return BenchRow(method, fraction, seed, METHODS.get(base).family if base in METHODS else "alternative", deploys,
                    {k: auc for k in SCALAR_METRICS}, val, costs, flags, method_dir)  # fmt: skip


def test_paired_difference_and_its_t_interval():
    rows = [_row("student", s, a) for s, a in enumerate((0.80, 0.82, 0.78))]
    rows += [_row("rd", s, a) for s, a in enumerate((0.85, 0.88, 0.83))]
    mean, lo, hi, n = paired_difference(rows, "rd", "student", 0.1, "auc")
    d = np.array([0.05, 0.06, 0.05])
    half = 4.303 * d.std(ddof=1) / math.sqrt(3)
    assert n == 3 and mean == pytest.approx(d.mean()) and (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    rows.append(_row("rd", 7, 0.99))  # a seed the baseline lacks is not paired
    assert paired_difference(rows, "rd", "student", 0.1, "auc")[3] == 3


def test_reprogramming_methods_are_compared_with_the_best_kd_baseline():
    rows = [_row(m, s, a + (0.015 if m == "drd" else 0.01) * s) for s in range(3)
            for m, a in (("student", 0.7), ("kd", 0.8), ("rkd", 0.75), ("drd", 0.9))]  # fmt: skip
    text = paired_markdown(rows, ["student", "kd", "rkd", "drd"])
    assert "| drd | best KD baseline (kd) | +0.1050 [" in text and "] ✓" in text
    for r in rows:  # the baseline is chosen on validation: rkd is better there, kd only on test
        r.val["auc"] = 0.9 if r.method == "rkd" else 0.5
    assert "| drd | best KD baseline (rkd) | +0.1550 [" in paired_markdown(rows, ["student", "kd", "rkd", "drd"])


def test_degenerate_rows_are_flagged_in_the_table_and_majority_row_present(tmp_path):
    cell = tmp_path / "cell"
    (cell / "kd").mkdir(parents=True)
    (cell / "data.json").write_text(json.dumps({"class_counts": {"train": [10, 30], "val": [2, 6], "test": [4, 12]}}))
    rows = [_row("kd", 0, 0.6, flags="ONE-CLASS: 100% of predictions are class 1", method_dir=str(cell / "kd")),
            _row("kd", 1, 0.7, flags="", method_dir=str(cell / "kd"))]  # fmt: skip
    text = results_markdown(rows, ["kd"])
    assert "**ONE-CLASS** in 1/2 seeds" in text
    assert "| *majority class* | | 0.7500 | 0.5000 |" in text


def test_best_student_is_chosen_on_validation_never_test():
    rows = [
        _row("a", 0, 0.99, fraction=1.0, val_loss=0.50),  # best on test, worse on validation
        _row("b", 0, 0.80, fraction=1.0, val_loss=0.20),
        _row("probe", 0, 0.99, deploys="FM", fraction=1.0, val_loss=0.01),
    ]
    assert best_student_cell(rows, "loss").method == "b"


def test_last_round_rule_compares_methods_by_validation_auc():
    rows = [
        _row("a", 0, 0.99, fraction=1.0, val_auc=0.70, val_loss=0.1),  # best test AUC and val loss, worse val AUC
        _row("b", 0, 0.80, fraction=1.0, val_auc=0.90, val_loss=0.9),
    ]
    assert best_student_cell(rows, "last").method == "b"


def test_report_names_the_commits_cells_trained_and_were_retested_at(tmp_path):
    from reprodistill.bench.report import _cell_commits

    rows = []
    commits = (("aaaaaaa111", "ccccccc333", True), ("aaaaaaa111", None, False), ("bbbbbbb222", None, None))
    for seed, (trained, retested, edited) in enumerate(commits):
        cell = tmp_path / f"seed{seed}"
        (cell / "kd").mkdir(parents=True)
        (cell / "env.json").write_text(json.dumps({"git_sha": trained}))
        if retested:
            (cell / "retest.json").write_text(json.dumps({"git_sha": retested, "code_modified": edited}))
        rows.append(_row("kd", seed, 0.7, method_dir=str(cell / "kd")))
    assert _cell_commits(rows) == [
        "- Cells trained at: `aaaaaaa` (2), `bbbbbbb` (1)",
        "- Cells re-tested (stored checkpoints, no training) at: `ccccccc` with uncommitted edits (1)",
    ]


def test_code_state_says_when_the_package_differs_from_its_commit(tmp_path):
    """env.json's commit names the code that ran only if the package was committed; an edit of a tracked file under
    the package is recorded, an edit elsewhere in the checkout (a bench's own report) is not."""
    import subprocess

    from reprodistill.engine.environment import read_code_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert read_code_state(tmp_path) == (None, None)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "report.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert read_code_state(tmp_path / "pkg") == (sha, False)
    (tmp_path / "report.md").write_text("new\n")
    (tmp_path / "pkg" / "untracked.py").write_text("")
    assert read_code_state(tmp_path / "pkg") == (sha, False)
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert read_code_state(tmp_path / "pkg") == (sha, True)


def test_commit_is_read_when_the_code_is_imported_not_when_a_cell_starts(monkeypatch):
    """A bench keeps running the code it imported after a commit; its cells must record that code's commit."""
    import subprocess

    from reprodistill.engine import environment

    before = environment.git_sha()

    def moved_on(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout="f" * 40 + "\n")

    monkeypatch.setattr(environment.subprocess, "run", moved_on)
    assert environment.git_sha() == before


def test_too_few_seeds_or_no_spread_claim_nothing():
    """Two seeds, or differences without spread, print no interval and no check mark (a 2-seed bench printed
    "+0.0250 [+0.0250, +0.0250] ✓" for one test image of 40)."""
    rows = [_row("student", s, 0.80) for s in range(2)] + [_row("rd", s, 0.825) for s in range(2)]
    two = paired_difference(rows, "rd", "student", 0.1, "auc")
    assert two.n == 2 and math.isnan(two.low) and format_paired(two) == "+0.0250 (2 seeds: too few for an interval)"
    rows += [_row("student", 2, 0.80), _row("rd", 2, 0.825)]
    flat = paired_difference(rows, "rd", "student", 0.1, "auc")
    assert flat.n == 3 and "no interval" in format_paired(flat) and "✓" not in format_paired(flat)
    assert "] ✓" not in paired_markdown(rows, ["student", "rd"])


def test_verdict_picks_on_validation_and_compares_the_best_of_each_side():
    from reprodistill.bench.verdict import verdict_markdown

    rows = []
    for s in range(4):
        rows += [_row("student", s, 0.70 + 0.01 * s, val_auc=0.70), _row("fixmatch-unl", s, 0.74 + 0.01 * s,
                 val_auc=0.78), _row("kd", s, 0.90, val_auc=0.60),  # best on test, worst on validation
                 _row("rd-unl", s, 0.80 + 0.02 * s, val_auc=0.82), _row("tdmr", s, 0.85, val_auc=0.65)]  # fmt: skip
    methods = ["student", "fixmatch-unl", "kd", "rd-unl", "tdmr"]
    text = verdict_markdown(rows, methods)
    assert "deploy `rd-unl`" in text and "reprodistill's best `rd-unl`" in text
    assert "best alternative `fixmatch-unl`" in text  # not kd, which only the test split favours
    d = np.array([0.06, 0.07, 0.08, 0.09])
    assert f"AUC +{d.mean():.4f} [" in text and "] ✓" in text
    assert "does not separate" not in text  # 0.82 against 0.78 on every seed
    fixmatch_val = iter([0.84, 0.79, 0.83, 0.81])  # mean 0.8175: rd-unl (0.82) still ahead, by +0.0025 [-, +]
    tied = [dataclasses.replace(r, val={**r.val, "auc": next(fixmatch_val)}) if r.method == "fixmatch-unl" else r
            for r in rows]  # fmt: skip
    tied_text = verdict_markdown(tied, methods)
    assert "deploy `rd-unl`" in tied_text
    assert "; validation does not separate it from `fixmatch-unl` (val AUC +0.0025 [-0.0" in tied_text
    for r in rows:  # the alternative ahead on validation: it is the one to deploy
        if r.method == "fixmatch-unl":
            r.val["auc"] = 0.9
    assert "deploy `fixmatch-unl`" in verdict_markdown(rows, methods)
    assert "only the small model" not in verdict_markdown(rows, methods)
    # a PEFT row ahead on validation deploys the FM: the line also names the best row that ships the small student
    rows += [_row("lora", s, 0.88, deploys="FM", val_auc=0.95) for s in range(4)]
    text = verdict_markdown(rows, methods + ["lora"])
    assert "deploy `lora`** (FM," in text and "best alternative `lora`" in text
    assert "if only the small model can be deployed: `fixmatch-unl` (mean validation AUC 0.9000)" in text
    assert f"minus the best small-model alternative `fixmatch-unl` (val 0.9000): AUC +{d.mean():.4f} [" in text
    one = verdict_markdown([r for r in rows if r.seed == 0], methods)  # the quick job's single seed
    assert "paired over 1 seed, " in one and "(1 seed: too few for an interval)" in one


def test_latency_is_one_figure_per_deployed_architecture():
    from reprodistill.bench.stats import deployed_latency

    rows = [_row("student", 0, 0.7, latency_ms=266.5, params=11e6), _row("rd", 0, 0.8, latency_ms=5.6, params=11e6),
            _row("kd", 0, 0.8, latency_ms=9.7, params=11e6), _row("lora", 0, 0.8, deploys="FM", latency_ms=900,
            params=58e6)]  # fmt: skip
    lat = deployed_latency(rows)
    assert sorted(lat.values()) == [5.6, 900.0]  # the three resnet18 rows: one figure, the fastest
    table = results_markdown(rows, ["student", "rd", "kd", "lora"])
    assert table.count("| 5.6 |") == 3 and "| 900.0 |" in table and "fastest" in table


def test_report_says_how_many_cells_this_command_trained():
    from reprodistill.bench.report import cells_trained_here

    assert cells_trained_here(None, 4) == ""
    assert cells_trained_here(4, 4) == ", all 4 cells trained by this command"
    assert cells_trained_here(1, 4) == ", 1 of 4 cells trained by this command, the rest earlier or by other processes"
    assert "0 of 4" in cells_trained_here(0, 4)  # a rerun that only collected: none trained here


def test_saturated_validation_auc_gives_way_to_balanced_accuracy_and_the_verdict_says_so():
    """On an easy set every row's validation AUC sits near 1 (0.9992 vs 0.9990 chose FixMatch by noise on a held-out
    10-class set): the verdict then chooses by validation balanced accuracy, which still separates, and says so."""
    from reprodistill.bench.verdict import verdict_markdown

    rows = []
    for s in range(3):
        rows += [_row("fixmatch-unl", s, 0.95, val_auc=0.9992, val_balanced_accuracy=0.90 + 0.001 * s),
                 _row("rd-unl", s, 0.97, val_auc=0.9990, val_balanced_accuracy=0.95 + 0.001 * s)]  # fmt: skip
    text = verdict_markdown(rows, ["fixmatch-unl", "rd-unl"])
    assert "deploy `rd-unl`** (student, 0.00M params; mean validation bal. acc 0.9510)" in text
    assert "chosen by validation bal. acc: the best validation AUC, 0.9992, is at or above 0.99" in text
    below = [dataclasses.replace(r, val={**r.val, "auc": r.val["auc"] - 0.1}) for r in rows]  # 0.8992 / 0.8990
    assert "deploy `fixmatch-unl`** (student, 0.00M params; mean validation AUC 0.8992)" in verdict_markdown(
        below, ["fixmatch-unl", "rd-unl"]
    )


def test_convergence_section_flags_rows_still_rising_at_their_last_round():
    from reprodistill.bench.report import convergence_markdown
    from reprodistill.bench.stats import late_rise

    rising = [dataclasses.replace(_row("fixmatch-unl", s, 0.8), val_auc_curve=(0.5, 0.6, 0.7, 0.70 + 0.01 * s,
              0.75, 0.78 + 0.01 * s)) for s in range(3)]  # fmt: skip
    flat = [dataclasses.replace(_row("rd-unl", s, 0.8), val_auc_curve=(0.5, 0.8, 0.81, 0.80 + 0.01 * s, 0.80,
            0.805)) for s in range(3)]  # fmt: skip
    d, at, end = late_rise(rising, "fixmatch-unl", 0.1)
    # 6 rounds: two thirds through is round 4 (index 3): rises 0.08, 0.08, 0.08 -> no spread, no interval
    assert at == pytest.approx(0.71) and end == pytest.approx(0.79) and d.n == 3 and math.isnan(d.low)
    rising[2] = dataclasses.replace(rising[2], val_auc_curve=(0.5, 0.6, 0.7, 0.70, 0.75, 0.81))
    text = convergence_markdown(rising + flat, ["fixmatch-unl", "rd-unl"])
    assert "| fixmatch-unl | 0.1 | 3 | 0.7033 | 0.7933 | +0.0900 [" in text and "] ✓ |" in text
    assert "Still rising at its last round: `fixmatch-unl` (fraction 0.1)." in text
    assert "`rd-unl`" not in text.split("Still rising")[1]


def test_budget_axis_rows_choose_their_budget_on_validation():
    from reprodistill.bench.report import budget_markdown
    from reprodistill.bench.verdict import verdict_markdown

    rows = []
    for s in range(3):
        rows += [_row("fixmatch-unl@300", s, 0.76, val_auc=0.80, transfer_s=90),
                 _row("fixmatch-unl@1500", s, 0.79, val_auc=0.83, transfer_s=450),
                 _row("rd-unl@300", s, 0.80, val_auc=0.82, transfer_s=95),
                 _row("rd-unl@1500", s, 0.85, val_auc=0.81, transfer_s=470)]  # fmt: skip
    methods = ["fixmatch-unl@300", "fixmatch-unl@1500", "rd-unl@300", "rd-unl@1500"]
    assert rows[1].budget == ("fixmatch-unl", 1500) and _row("rd-unl", 0, 0.5).budget is None
    table = budget_markdown(rows, methods)
    assert "| fixmatch-unl | 0.1 | 300, 1500 | 1500 | 0.8300 | 0.7900 ± 0.0000 | 450 |" in table
    assert "| rd-unl | 0.1 | 300, 1500 | 300 | 0.8200 |" in table  # validation, not test, chose it
    text = verdict_markdown(rows, methods)  # the verdict compares (method, budget) pairs
    assert "deploy `fixmatch-unl@1500`" in text and "reprodistill's best `rd-unl@300`" in text


def test_report_intro_names_every_budget_of_a_budget_axis():
    from reprodistill.bench.report import _budget
    from reprodistill.config import expand_budgets, load_config

    assert _budget(load_config("breast-bench", [])).startswith("300 optimiser steps for every cell")
    axis = load_config("breast-bench", ["bench.steps=[1500,300]"])
    for cfg in (axis, expand_budgets(axis)):  # the report gets the expanded config: the budgets are in the rows
        assert _budget(cfg).startswith("300 or 1,500 optimiser steps (`bench.steps`: each row's budget is in its name")
