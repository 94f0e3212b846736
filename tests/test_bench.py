"""The bench's smoke run: every case runs and reports, so the bench never rots."""

from __future__ import annotations

import json
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
    assert set(results) == {"GET /v1/weather/locations", *posts, "stream", "startup", "growth"}
    for case in ("GET /v1/weather/locations", *posts):
        assert results[case]["stackflask"]["rps"] > 0 and results[case]["floor"]["rps"] > 0
        assert results[case]["stackflask"]["errors"] == 0
    assert results["stream"]["stackflask"]["events_per_s"] > 0
    assert 0 < results["startup"]["stackflask_s"] < 30
    assert results["growth"]["first_route"]["rps"] > 0
    assert "| GET /v1/weather/locations |" in result.stdout
