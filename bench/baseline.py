"""The typed POSTs of this checkout against a baseline checkout's, in one run.

    git worktree add /tmp/sf-base 0fde38b
    python3 -m venv /tmp/sf-base/.venv && /tmp/sf-base/.venv/bin/pip install -q -e '/tmp/sf-base[test]'
    python bench/baseline.py /tmp/sf-base          # 8 rounds: about 8 minutes

Every checkout serves this checkout's bench config and ``bench_api`` (the same
routes and types) with its own stackflask, from its own virtual environment
(``CHECKOUT/.venv``), on the same waitress settings as bench/run.py; further
checkouts (``--also PATH``) are measured beside them. Each round loads each
checkout's server in turn, in an order rotated every round, pinned (``taskset
-c 1``, the load on core 0) and as is. Per mode it prints each checkout's median
requests per second and the median (and range) of the rounds' ratios checkout /
baseline, each between runs a few seconds apart; and each checkout's pydantic
POST against its dataclass POST, served by the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import run

POSTS = {
    "dataclasses (marshmallow)": "/v1/bench/order",
    "pydantic": "/v1/bench/order_pydantic",
}


def measure(checkout: Path, pinned: bool, duration: float) -> dict[str, dict[str, float]]:
    """Each POST's load result on one fresh server of ``checkout``."""
    bin = run.BIN if checkout == run.ROOT else checkout / ".venv" / "bin"
    server = run.Server(run.waitress("app:create_app", call=True, bin=bin),
                        run.env_for(run.BENCH / "config" / "run.yaml"), checkout, pinned)
    try:
        out = {}
        for name, path in POSTS.items():
            run.load(server.url + path, 16, min(1.0, duration), run.ORDER)  # warm-up
            out[name] = run.load(server.url + path, 16, duration, run.ORDER)
            if out[name]["errors"]:
                raise RuntimeError(f"{checkout}: {path} answered errors")
        return out
    finally:
        server.stop()


def summary(rounds: list[dict[str, Any]], sides: list[str], modes: list[bool]) -> str:
    lines = ["| mode | POST | checkout | median rps | / baseline: median | min | max |",
             "|---|---|---|---|---|---|---|"]
    for pinned in modes:
        mine = [r for r in rounds if r["pinned"] == pinned]
        for name in POSTS:
            base = [r["baseline"][name]["rps"] for r in mine]
            for side in sides:
                rps = [r[side][name]["rps"] for r in mine]
                ratios = [s / b for s, b in zip(rps, base)]
                lines.append(f"| {'pinned' if pinned else 'as is'} | {name} | {side} "
                             f"| {statistics.median(rps):.0f} | {statistics.median(ratios):.3f} "
                             f"| {min(ratios):.3f} | {max(ratios):.3f} |")
    lines += ["", "| mode | checkout | pydantic / dataclasses rps, same server: median | min | max |",
              "|---|---|---|---|---|"]
    for pinned in modes:
        mine = [r for r in rounds if r["pinned"] == pinned]
        for side in sides:
            ratios = [r[side]["pydantic"]["rps"] / r[side]["dataclasses (marshmallow)"]["rps"] for r in mine]
            lines.append(f"| {'pinned' if pinned else 'as is'} | {side} | {statistics.median(ratios):.3f} "
                         f"| {min(ratios):.3f} | {max(ratios):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the baseline checkout, with its .venv")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another checkout (with its .venv) to measure beside them")
    parser.add_argument("--rounds", type=int, default=8, help="rotations per mode")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = parser.parse_args()
    checkouts = {"baseline": args.baseline.resolve(),
                 **{str(p.resolve()): p.resolve() for p in args.also}, "this": run.ROOT}
    sides = list(checkouts)
    modes = [True, False] if run.PIN else [False]
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for pinned in modes:
            result: dict[str, Any] = {"round": i, "pinned": pinned}
            for side in sides[i % len(sides):] + sides[:i % len(sides)]:
                result[side] = measure(checkouts[side], pinned, args.duration)
            rounds.append(result)
            print(json.dumps({k: v if not isinstance(v, dict) else
                              {n: round(r["rps"]) for n, r in v.items()} for k, v in result.items()}),
                  file=sys.stderr, flush=True)
    print(f"load generator: {'wrk' if run.WRK else 'bench/loadgen.py'}; baseline: {checkouts['baseline']}; "
          f"this: {run.ROOT}; {args.rounds} rounds of {args.duration:g} s per POST")
    print(summary(rounds, sides, modes))
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
