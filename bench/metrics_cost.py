"""The cost of metrics per request: GET /v1/weather/locations through the WSGI
app (no server), metrics off against on.

    taskset -c 1 python bench/metrics_cost.py [rounds]
    STACKFLASK_LOG_FORMAT=json taskset -c 1 python bench/metrics_cost.py

Both apps serve the embedded default in one process; their rounds of 2,000
requests alternate, and the best round of each is printed in microseconds per
request (access lines formatted and written to /dev/null).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from werkzeug.test import EnvironBuilder

from stackflask import create_app

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
N = 2000

apps = {"off": create_app(), "on": create_app(metrics=True)}
devnull = open(os.devnull, "w")  # noqa: SIM115 (the process's lifetime)
for handler in logging.getLogger("stackflask").handlers:
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(devnull)
environ = EnvironBuilder(path="/v1/weather/locations", headers={"User-Agent": "bench"}).get_environ()


def request(app: Any) -> Callable[[], None]:
    def call() -> None:
        body = app(dict(environ), lambda status, headers, exc_info=None: None)
        b"".join(body)
        body.close()

    return call


calls = {name: request(app) for name, app in apps.items()}
best = dict.fromkeys(calls, float("inf"))
for call in calls.values():
    for _ in range(500):
        call()
for _ in range(ROUNDS):
    for name, call in calls.items():
        started = time.perf_counter()
        for _ in range(N):
            call()
        best[name] = min(best[name], (time.perf_counter() - started) / N * 1e6)
print(
    f"| {os.environ.get('STACKFLASK_LOG_FORMAT', 'text')} | {best['off']:.1f} | "
    f"{best['on']:.1f} | {best['on'] - best['off']:.1f} |"
)
