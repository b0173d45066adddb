"""GPU readiness in one run (under 10 minutes on an H100/H200): what a lent GPU does with this project's work.

    python benchmarks/gpu_readiness.py                 # on the GPU machine (`device`)
    python benchmarks/gpu_readiness.py --smoke         # on CPU: tiny sizes, checks that the script itself runs

Prints, each as a ratio or a difference measured within this run:
1. the Merlin FM pass (112 px, batch 256): images/s in fp32 and bf16 autocast, and the bf16 rate's share of the
   GPU's dense bf16 peak (FLOPs per image from PyTorch's FLOP counter);
2. resnet18 student steps/s at 28 px, batch 128, fp32 vs bf16 autocast;
3. the same short BreastMNIST 10% run (student alone and rd with the unlabelled images) with the FM in fp32, bf16
   and under torch.compile: the test AUC / accuracy differences against fp32 (stated tolerance 0.02 AUC: bf16
   changes the cached features in their third digit);
4. two bench cells sharing one GPU under `--launcher processes` (GPU pool "0,0") against the same two cells one
   after another: the wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# dense bf16 tensor-core peaks (FLOP/s) by device name fragment
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
AUC_TOLERANCE = 0.02


def fm_pass(device: torch.device, smoke: bool) -> None:
    from reprodistill.config import TeacherConfig
    from reprodistill.engine.profile import flops
    from reprodistill.models import create_teacher

    teacher = create_teacher(TeacherConfig(name="merlin")).to(device)
    batch = 8 if smoke else 256
    x = torch.rand(batch, 1, 112, 112, device=device)
    per_image = flops(teacher, x[:1])
    for precision in ("fp32", "bf16"):
        teacher.configure(precision, False)
        with torch.inference_mode():
            teacher(x)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, n = time.perf_counter(), 2 if smoke else 20
            for _ in range(n):
                teacher(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        rate = n * batch / (time.perf_counter() - t)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
        share = f", {rate * per_image / peak:.1%} of the {name} bf16 peak" if peak and precision == "bf16" else ""
        print(f"1. Merlin FM pass {precision}: {rate:,.0f} images/s ({per_image / 1e9:.1f} GFLOP/image){share}")


def student_steps(device: torch.device, smoke: bool) -> None:
    import timm

    model = timm.create_model("resnet18", num_classes=2).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(128, 3, 28, 28, device=device)
    y = torch.randint(0, 2, (128,), device=device)
    rates = {}
    for precision in ("fp32", "bf16"):
        n = 3 if smoke else 200
        for i in range(n + 5):
            if i == 5:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates[precision] = n / (time.perf_counter() - t)
    print(f"2. resnet18 steps/s, batch 128 at 28 px: fp32 {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} "
          f"({rates['bf16'] / rates['fp32']:.2f}x)")  # fmt: skip


def _bench(folder: Path, extra: list[str], smoke: bool, launcher: list[str] = ()) -> tuple[float, list[dict]]:
    steps = ["train.steps=4", "train.epochs=2"] if smoke else []
    cmd = [sys.executable, "-m", "reprodistill", "bench", "-c", "breast-bench", "methods=[student,rd-unl]",
           "bench.variants={rd-unl: {method: rd, data: {unlabelled: rest}}}", "bench.seeds=[0]",
           "bench.fractions=[0.1]", f"teacher.cache_dir={folder / 'cache'}", "--dir", str(folder / "bench"),
           *steps, *extra, *launcher]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    import csv

    with open(folder / "bench" / "results.csv") as f:
        return wall, list(csv.DictReader(f))


def precisions(smoke: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = None
        for name, extra in (("fp32", ["teacher.precision=fp32"]), ("bf16", ["teacher.precision=bf16"]),
                            ("compile", ["teacher.precision=fp32", "teacher.compile=true"])):  # fmt: skip
            _, rows = _bench(Path(d) / name, extra, smoke)
            metrics = {r["method"]: (float(r["auc"]), float(r["accuracy"])) for r in rows}
            if base is None:
                base = metrics
                print(f"3. fp32 test AUC / acc: {json.dumps(metrics)}")
                continue
            worst = max(abs(metrics[m][0] - base[m][0]) for m in base)
            ok = "within" if worst <= AUC_TOLERANCE else "OUTSIDE"
            print(f"3. {name}: largest test AUC difference from fp32 {worst:.4f} ({ok} the {AUC_TOLERANCE} tolerance)")


def shared_gpu(smoke: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        seq, _ = _bench(Path(d) / "one", [], smoke, ["--launcher", "processes", "--workers", "1", "--gpus", "0"])
        par, _ = _bench(Path(d) / "two", [], smoke, ["--launcher", "processes", "--workers", "2", "--gpus", "0,0"])
        print(f"4. two cells on one GPU at once: {par:.0f} s against {seq:.0f} s one after another ({seq / par:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs (CPU is fine)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        sys.exit("no GPU here: run it on the device machine, or with --smoke to check the script")
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}"
    )
    fm_pass(device, args.smoke)
    student_steps(device, args.smoke)
    precisions(args.smoke)
    shared_gpu(args.smoke)


if __name__ == "__main__":
    main()
