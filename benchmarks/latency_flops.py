"""Student vs foundation-model CPU latency (batch 1, median of 20) and FLOPs, measured in one run.

python benchmarks/latency_flops.py --student resnet18 --student-size 28 --teacher merlin
"""

from __future__ import annotations

import argparse

import torch

from reprodistill.config import StudentConfig, TeacherConfig
from reprodistill.engine.profile import count_params, flops, latency_ms
from reprodistill.models import create_student, create_teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="resnet18")
    p.add_argument("--student-size", type=int, default=28)
    p.add_argument("--teacher", default="merlin")
    args = p.parse_args()
    student = create_student(StudentConfig(name=args.student), 2, (args.student_size,) * 2).eval()
    teacher = create_teacher(TeacherConfig(name=args.teacher))
    rows = []
    for name, model, spec in (
        ("student " + args.student, student, student.spec),
        ("FM " + args.teacher, teacher, teacher.spec),
    ):
        x = torch.zeros(1, spec.channels, *spec.size)
        rows.append((name, count_params(model) / 1e6, flops(model, x) / 1e9, latency_ms(model, x, repeats=20)))
    print(f"{'model':32s} {'params (M)':>10s} {'GFLOPs':>8s} {'latency ms':>10s}")
    for r in rows:
        print(f"{r[0]:32s} {r[1]:10.2f} {r[2]:8.3f} {r[3]:10.1f}")
    s, t = rows
    print(f"FM / student: {t[1] / s[1]:.1f}x params, {t[2] / s[2]:.1f}x FLOPs, {t[3] / s[3]:.1f}x latency")


if __name__ == "__main__":
    main()
