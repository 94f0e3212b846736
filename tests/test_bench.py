"""The bench's smoke run: every case runs and reports, so the bench never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


@pytest.mark.parametrize("loadgen", [[], ["--loadgen"]], ids=["default", "python-loadgen"])
def test_quick_bench_reports_every_case(tmp_path, loadgen):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out), *loadgen],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    results = {r["case"]: r for r in json.loads(out.read_text())}
    posts = ("POST /v1/bench/order (10 typed fields)",
             "POST /v1/bench/order_pydantic (10 fields, pydantic)")
    as_run = ("as run: GET /v1/weather/locations", "gunicorn workers: GET /v1/weather/locations")
    assert set(results) == {"GET /v1/weather/locations", *posts, *as_run, "stream", "startup",
                            "growth"}
    for case in ("GET /v1/weather/locations", *posts):
        assert results[case]["stackflask"]["rps"] > 0 and results[case]["floor"]["rps"] > 0
        assert results[case]["stackflask"]["errors"] == 0
    for case in as_run:
        for label, run in results[case]["as_run"].items():
            assert run["rps"] > 0 and run["errors"] == 0, (case, label)
    servers = results["as run: GET /v1/weather/locations"]["as_run"]
    assert set(servers) == {"stackflask run", "stackflask run --cpus all",
                            "taskset -c 1 stackflask run", "waitress-serve floor_app:app",
                            "taskset -c 1 waitress-serve floor_app:app"}
    workers = results["gunicorn workers: GET /v1/weather/locations"]["as_run"]
    assert set(workers) == {"stackflask gunicorn -w 1", "stackflask gunicorn -w 2",
                            "floor gunicorn -w 1", "floor gunicorn -w 2"}
    if len(os.sched_getaffinity(0)) >= 2:  # pinned by stackflask itself: one CPU
        assert "," not in servers["stackflask run"]["cpus"]
        assert "-" not in servers["stackflask run"]["cpus"]
        assert len(set(workers["stackflask gunicorn -w 2"]["cpus"].split(", "))) == 2
    assert results["stream"]["stackflask"]["events_per_s"] > 0
    assert 0 < results["startup"]["stackflask_s"] < 30
    assert results["growth"]["first_route"]["rps"] > 0
    assert "| GET /v1/weather/locations |" in result.stdout


def test_quick_hop_bench_reports_the_passthrough(tmp_path):
    out = tmp_path / "hop.json"
    result = subprocess.run([sys.executable, str(BENCH.parent / "hop.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    for key in ("direct_1", "hop_1", "direct_16", "hop_16"):
        assert results[key]["rps"] > 0 and results[key]["errors"] == 0
    assert results["hop_16"]["cpu_us_B"] > 0 and results["hop_16"]["cpu_us_A"] > 0
    assert results["p50_ratio"] > 0 and results["rps_ratio"] > 0
    assert "| client -> B -> A | 16 |" in result.stdout and "load average" in result.stdout
