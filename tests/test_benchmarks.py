"""The benchmark scripts keep running (their figures are printed, not asserted; FLOP counts are deterministic)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dla_cost_benchmark_runs_and_reports_the_ratio():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dla_cost.py"), "--repeats", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ratio = float(re.search(r"DLA / one FLUX step\s+([\d.]+)%", result.stdout).group(1))
    assert 0 < ratio < 1.0, result.stdout  # a FLOP count, not a timing: the design target itself


def test_training_step_benchmark_runs_every_variant():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--steps", "1", "--batch-size", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(stage [12].*?)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$", result.stdout, re.M)
    assert len(rows) == 5 and all(float(r[1]) > 0 and int(r[3]) > 0 for r in rows), result.stdout
