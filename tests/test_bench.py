"""`make bench-quick` (python -m initlab.bench --quick) runs and writes valid JSON, its MLflow
floor logging every run that evaluate logs. The numbers themselves are measured by `make
bench`, never asserted here."""

from __future__ import annotations

import json
import math
import sys

from conftest import project_env, run

KEYS = ("gemm_flops", "trainer_flops", "trainer_vs_gemm", "trainer_vs_gemm_ceiling",
        "narrow_trainer_seconds", "speedup_vs_plain_loop",
        "pipeline_overhead", "noop_repro_seconds", "cell_peak_rss_mb", "overhead_floor",
        "dvc_alone_seconds", "cell_import_seconds", "mlflow_alone_seconds", "evaluate_seconds",
        "report_seconds", "added_init_fixed_seconds", "warm_added_init_fixed_seconds",
        "threshold_edit_seconds")


def test_quick_bench_writes_every_key_as_a_number(prepared_project):
    run([sys.executable, "-m", "initlab.bench", "--quick"], prepared_project,
        env=project_env(prepared_project), timeout=600)
    bench = json.loads((prepared_project / "reports" / "bench.json").read_text())
    for key in KEYS:
        assert isinstance(bench[key], (int, float)) and math.isfinite(bench[key]), key
    assert bench["gemm_flops"] > 0 and bench["cell_peak_rss_mb"] > 10
    # the floor logs every run evaluate logs: relu-zero's 2 seeds and relu-he's 3
    assert bench["runs"] == bench["mlflow_alone_runs"] == 5
    assert {"cpu_model", "cores", "torch_threads", "date"} <= set(bench)
    assert (prepared_project / "reports" / "bench.md").read_text().startswith("# initlab")
