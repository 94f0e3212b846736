"""This checkout's ``stackflask run`` against a baseline's and the floor's, in one run.

    git worktree add /tmp/sf-before HEAD      # before the change to measure
    python bench/versus.py /tmp/sf-before                # pinned: about 4 minutes
    python bench/versus.py /tmp/sf-before --cpus all     # not pinned

The baseline is a folder holding a ``stackflask`` package (a checkout or a
worktree); it is served by this virtual environment, its folder first on
``PYTHONPATH``, so that only stackflask's own code differs. Each round starts,
in an order reversed every round, the baseline, this checkout (both ``stackflask
run`` with bench/config/run.yaml) and the floor (``waitress-serve
floor_app:app``), pinned to CPU 1 (``taskset -c 1``) or, with ``--cpus all``,
not pinned, and loads each with ``GET /v1/weather/locations`` at 1 and 16
connections and the typed ``POST /v1/bench/order`` at 16, wrk on CPU 0 as in
bench/run.py. Prints the medians and, per case, the median (and range) of the
rounds' ratios, each between servers loaded seconds apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import run

CASES = [
    ("GET /v1/weather/locations", 1, "/v1/weather/locations", None),
    ("GET /v1/weather/locations", 16, "/v1/weather/locations", None),
    ("POST /v1/bench/order", 16, "/v1/bench/order", run.ORDER),
]
SIDES = ("baseline", "this", "floor")


def server(side: str, baseline: Path, cpus: str) -> run.Server:
    pinned = cpus != "all"
    if side == "floor":
        return run.Server(run.waitress("floor_app:app"), run.env_for(), run.BENCH, pinned)
    env = run.env_for(run.BENCH / "config" / "run.yaml")
    if side == "baseline":
        env["PYTHONPATH"] = os.pathsep.join([str(baseline), env["PYTHONPATH"]])
    args = [str(run.BIN / "stackflask"), "run", "--port", "{port}", "--cpus", "all"]
    return run.Server(args, env, run.ROOT, pinned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a folder holding the baseline's stackflask package")
    parser.add_argument("--cpus", choices=("1", "all"), default="1",
                        help="1: every server pinned to CPU 1 (default); all: none pinned")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load run")
    args = parser.parse_args()
    if not (args.baseline / "stackflask" / "__init__.py").is_file():
        raise SystemExit(f"{args.baseline}: no stackflask package there")
    results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    for i in range(args.rounds):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            running = server(side, args.baseline.resolve(), args.cpus)
            try:
                for name, connections, path, body in CASES:
                    url = running.url + path
                    run.load(url, connections, 1.0, body)  # warm-up
                    results.setdefault((name, connections, side), []).append(
                        run.load(url, connections, args.duration, body))
            finally:
                running.stop()
            print(f"round {i + 1}: {side} done", file=sys.stderr, flush=True)
    print(f"load generator: {'wrk' if run.WRK else 'bench/loadgen.py'}; baseline: {args.baseline}; "
          f"{'pinned to CPU 1' if args.cpus == '1' else 'not pinned'}; "
          f"{args.rounds} rounds of {args.duration:g} s per case")
    print("| case | conns | baseline rps | this rps | floor rps | this / baseline | "
          "baseline / floor | this / floor | p50 ms: baseline, this, floor | p50 this / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, connections, _, _ in CASES:
        runs = {side: results[(name, connections, side)] for side in SIDES}

        def ratio(a: str, b: str, key: str = "rps", runs: dict[str, list[dict[str, Any]]] = runs) -> str:
            values = [x[key] / y[key] for x, y in zip(runs[a], runs[b])]
            return f"{statistics.median(values):.3f} ({min(values):.3f} to {max(values):.3f})"

        rps = {side: statistics.median(r["rps"] for r in runs[side]) for side in SIDES}
        p50 = ", ".join(f"{statistics.median(r['p50'] for r in runs[side]):.2f}" for side in SIDES)
        print(f"| {name} | {connections} | {rps['baseline']:.0f} | {rps['this']:.0f} | "
              f"{rps['floor']:.0f} | {ratio('this', 'baseline')} | {ratio('baseline', 'floor')} | "
              f"{ratio('this', 'floor')} | {p50} | {ratio('this', 'floor', 'p50')} |")


if __name__ == "__main__":
    main()
