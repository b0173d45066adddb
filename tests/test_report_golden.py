"""The bench report of a stored bench folder (tests/data/golden_bench: 18 BreastMNIST 10% cells, 6 methods x 3
seeds, their result files only, no weights) against its stored text: a refactor of bench/ must leave every word and
number of report.md as it was. A change meant to alter the report rewrites the golden file in the same commit:

    python tests/test_report_golden.py      # rewrites tests/data/golden_bench/report.golden.md
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden_bench"


def render(folder: Path) -> str:
    """report.md of the bench ``folder`` (a copy of the golden one), with the machine and commit lines fixed."""
    import reprodistill.engine.environment as environment
    from reprodistill.bench import report
    from reprodistill.bench.grid import bench_cells
    from reprodistill.bench.rows import read_row
    from reprodistill.config import load_config

    sha, machine = environment.git_sha, report._machine
    environment.git_sha, report._machine = (lambda: "0000000"), (lambda: "the golden machine")
    try:
        cfg = load_config(str(folder / "bench.yaml"))
        rows = [read_row(c.method, c.fraction, c.seed, c.base, c.result_path(folder).parent) for c in bench_cells(cfg)]
        return report.write_report(folder, cfg, rows, 123.0, 7, "reprodistill bench (golden)").read_text()
    finally:
        environment.git_sha, report._machine = sha, machine


def test_the_report_of_a_stored_bench_is_unchanged(tmp_path):
    folder = tmp_path / "bench"
    shutil.copytree(GOLDEN, folder)
    assert render(folder) == (GOLDEN / "report.golden.md").read_text()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(GOLDEN, Path(tmp) / "bench")
        (GOLDEN / "report.golden.md").write_text(render(Path(tmp) / "bench"))
    print(f"rewrote {GOLDEN / 'report.golden.md'}", file=sys.stderr)
