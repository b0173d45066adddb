"""Command line: ``reprodistill distill [--config PRESET|FILE] [section.key=value ...]``.

Examples::

    reprodistill distill                                   # default preset: PneumoniaMNIST, Merlin FM, resnet18
    reprodistill distill train.epochs=3 data.fraction=0.1 methods=[student,linear_probe]
    reprodistill config --config default teacher.name=efficientnet_lite0   # print the resolved config
    reprodistill list                                      # methods, teachers, presets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from reprodistill.config import load_config, preset_names, to_dict
from reprodistill.errors import ReprodistillError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reprodistill", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("distill", "train and compare the configured methods; writes a run folder"),
        ("config", "print the resolved config and exit"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--config", "-c", default="default", help=f"preset ({', '.join(preset_names())}) or YAML file")
        s.epilog = "Any number of dotted overrides may follow, e.g. train.epochs=5 student.name=resnet18"
        if name == "distill":
            s.add_argument("--run-dir", type=Path, help="run folder to use (default: a new one under out_dir)")
            s.add_argument("--resume", action="store_true", help="continue the methods of --run-dir from last.pt")
    sub.add_parser("list", help="list methods, teachers and presets")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides (key=value) may stand anywhere among the options, so collect them from the unknown arguments.
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and args.command == "list"):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)} (overrides look like section.key=value)")
    args.overrides = extra
    try:
        if args.command == "list":
            from reprodistill.methods import METHODS
            from reprodistill.models import TEACHERS

            print("methods: ", ", ".join(METHODS.names()))
            print("teachers:", ", ".join(TEACHERS.names()), "+ any timm name, hf-hub:<repo>, or a checkpoint file")
            print("presets: ", ", ".join(preset_names()))
            return 0
        cfg = load_config(args.config, args.overrides)
        if args.command == "config":
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        if args.resume and not args.run_dir:
            raise ReprodistillError("--resume needs --run-dir <existing run folder>")
        from reprodistill.engine.run import results_table, run

        result = run(cfg, run_dir=args.run_dir, resume=args.resume)
        print()
        print(results_table(result.results))
        print(f"\nwall time {result.wall_time_s:.0f} s; run folder: {result.run_dir}")
        return 0
    except ReprodistillError as e:
        print(f"reprodistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprodistill: interrupted; rerun with --resume --run-dir <folder> to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
