"""stackflask against the floor of its stack, side by side, in one run.

    python bench/run.py            # the full bench (about ten minutes)
    python bench/run.py --quick    # a smoke run (seconds)
    python bench/run.py --llama-stack http://127.0.0.1:8322   # and a Llama Stack server

Starts stackflask on waitress and a bare Flask app on the same waitress
settings (bench/floor_app.py), each as is and pinned to one core with taskset,
loads them alternately with wrk (or bench/loadgen.py when wrk is missing) and
prints, per case, requests per second, p50 and p99 latency and the ratio
stackflask / floor, where the floor is the faster of its two runs (and
stackflask likewise). Then the servers as users start them: ``stackflask run``
(its own CPU pinning, ``--cpus all``, and under ``taskset``) against
``waitress-serve`` of the floor app; gunicorn with 1 and 2 workers through
``stackflask.gunicorn_conf``; and, given its URL, a Llama Stack server. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

THREADS = 8
ORDER = {"order": {
    "id": 7, "customer": "Ada Lovelace", "email": "ada@example.com", "amount": 12.5,
    "quantity": 3, "express": True, "priority": "high", "tags": ["a", "b", "c"],
    "address": {"street": "1 Analytical Way", "city": "London", "zip": "N1"},
    "note": None,
}}
WRK = shutil.which("wrk")
FORCE_LOADGEN = False
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """A server process on a free loopback port, ready when /v1/health answers."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, pinned: bool) -> None:
        self.port = free_port()
        args = [a.replace("{port}", str(self.port)) for a in args]
        if pinned:
            args = ["taskset", "-c", "1", *args]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.startup = self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> float:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v1/health")
                if conn.getresponse().status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.002)
            finally:
                conn.close()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: Where the servers of this run claim their CPUs (stackflask.affinity): its
#: own folder, so that servers other programs run meanwhile do not take them.
CLAIMS = tempfile.mkdtemp(prefix="sf-bench-")


def env_for(config: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKFLASK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    env["XDG_RUNTIME_DIR"] = CLAIMS
    if config is not None:
        env["STACKFLASK_CONFIG"] = str(config)
    return env


def cpus_of(pid: int) -> str:
    """The CPU lists the threads of ``pid`` may run on; of its children, if it
    has any (gunicorn's workers), one list per child."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    lists = []
    for p in children or [str(pid)]:
        found = set()
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            found.update(line.split(":")[1].strip() for line in status.splitlines()
                         if line.startswith("Cpus_allowed_list:"))
        lists.append(" ".join(sorted(found)))
    return ", ".join(sorted(lists))


def waitress(target: str, call: bool = False, bin: Path = BIN) -> list[str]:
    """waitress-serve's command line, from the virtual environment's ``bin``."""
    return [str(bin / "waitress-serve"), f"--threads={THREADS}", "--listen=127.0.0.1:{port}",
            *(["--call"] if call else []), target]


@contextmanager
def stackflask(pinned: bool, config: Path | None = None) -> Iterator[Server]:
    server = Server(waitress("app:create_app", call=True), env_for(config), ROOT, pinned)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def floor(pinned: bool) -> Iterator[Server]:
    server = Server(waitress("floor_app:app"), env_for(), BENCH, pinned)
    try:
        yield server
    finally:
        server.stop()


def launch(args: list[str], cwd: Path, pinned: bool, config: Path | None = None) -> Any:
    """A context manager starting ``args`` (``{port}`` filled in) as a :class:`Server`."""

    @contextmanager
    def start() -> Iterator[Server]:
        server = Server(args, env_for(config), cwd, pinned)
        try:
            yield server
        finally:
            server.stop()

    return start()


def gunicorn(target: str, workers: int, conf: bool) -> list[str]:
    """gunicorn with ``workers`` gthread workers of THREADS threads (keep-alive, as waitress)."""
    return [str(BIN / "gunicorn"), "-w", str(workers), "-k", "gthread", f"--threads={THREADS}",
            "-b", "127.0.0.1:{port}", *(["-c", "python:stackflask.gunicorn_conf"] if conf else []),
            target]


#: The servers as users start them: (label, side, start(config)).
AS_RUN: list[tuple[str, str, Any]] = [
    ("stackflask run", "stackflask",
     lambda c: launch([str(BIN / "stackflask"), "run", "--port", "{port}"], ROOT, False, c)),
    ("stackflask run --cpus all", "stackflask",
     lambda c: launch([str(BIN / "stackflask"), "run", "--port", "{port}", "--cpus", "all"],
                      ROOT, False, c)),
    ("taskset -c 1 stackflask run", "stackflask",
     lambda c: launch([str(BIN / "stackflask"), "run", "--port", "{port}"], ROOT, True, c)),
    ("waitress-serve floor_app:app", "floor",
     lambda c: launch(waitress("floor_app:app"), BENCH, False)),
    ("taskset -c 1 waitress-serve floor_app:app", "floor",
     lambda c: launch(waitress("floor_app:app"), BENCH, True)),
]

#: gunicorn's workers: (label, workers, start(config)).
WORKERS: list[tuple[str, int, Any]] = [
    (f"{side} gunicorn -w {n}", n, start)
    for n in (1, 2)
    for side, start in (
        ("stackflask", lambda c, n=n: launch(gunicorn("app:create_app()", n, True), ROOT, False, c)),
        ("floor", lambda c, n=n: launch(gunicorn("floor_app:app", n, False), BENCH, False)),
    )
]


def load(url: str, connections: int, duration: float, body: dict[str, Any] | None = None) -> dict[str, float]:
    """Requests per second and p50/p99 latency (ms) of ``url`` under load."""
    data = json.dumps(body).encode() if body is not None else None
    if WRK is None or FORCE_LOADGEN:
        return loadgen.run(url, connections, duration, "POST" if data else "GET", data)
    args = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    if PIN:
        args = ["taskset", "-c", "0", *args]
    script = None
    if data is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(data.decode())}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
        script.close()
        args[-1:-1] = ["-s", script.name]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50": _wrk_ms(out, "50%"), "p99": _wrk_ms(out, "99%"),
            "errors": float(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1))
            if "Non-2xx" in out else 0.0}


def _wrk_ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def best(results: list[dict[str, float]]) -> dict[str, float]:
    """The run with the most requests per second."""
    return max(results, key=lambda r: r["rps"])


def compare(name: str, path: str, connections: int, args: Any, config: Path | None = None,
            body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load stackflask and the floor alternately, as is and pinned; the best of each."""
    runs: dict[str, list[dict[str, float]]] = {"stackflask": [], "floor": []}
    variants = [False, True] if PIN and not args.quick else [False]
    for _ in range(args.rounds):
        for pinned in variants:
            for label, start in (("stackflask", lambda p: stackflask(p, config)), ("floor", floor)):
                with start(pinned) as server:
                    load(server.url + path, connections, min(1.0, args.duration), body)  # warm-up
                    result = load(server.url + path, connections, args.duration, body)
                    result["pinned"] = pinned
                    runs[label].append(result)
    ours, base = best(runs["stackflask"]), best(runs["floor"])
    return {"case": name, "connections": connections, "stackflask": ours, "floor": base,
            "ratio": ours["rps"] / base["rps"], "p50_ratio": ours["p50"] / base["p50"] if base["p50"] else 0}


def as_run_case(name: str, path: str, connections: int, args: Any,
                servers: list[tuple[str, str, Any]] | list[tuple[str, int, Any]],
                config: Path | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each of ``servers`` loaded in turn, ``args.rounds`` times; the best run of each."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in servers}
    for _ in range(args.rounds):
        for label, _, start in servers:
            with start(config) as server:
                load(server.url + path, connections, min(1.0, args.duration), body)  # warm-up
                result: dict[str, Any] = dict(load(server.url + path, connections, args.duration, body))
                result["cpus"] = cpus_of(server.proc.pid)
                runs[label].append(result)
    return {"case": name, "connections": connections, "as_run": {
        label: best(results) for label, results in runs.items()}}


def llama_stack_check(url: str) -> str:
    """What the Llama Stack server at ``url`` calls itself, once it is seen to answer
    ``GET /v1/weather/locations`` with ``{"locations": [...]}``: checked before the
    bench starts, so that a wrong URL fails now, not after the other cases."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/v1/weather/locations")
        response = conn.getresponse()
        body = response.read()
        conn.request("GET", parts.path.rstrip("/") + "/v1/version")
        version = conn.getresponse()
        info = version.read()
    except OSError as error:
        raise SystemExit(f"--llama-stack {url}: {error}") from None
    finally:
        conn.close()
    try:
        locations = json.loads(body)["locations"]
    except (ValueError, KeyError, TypeError):
        locations = None
    if response.status != 200 or not isinstance(locations, list):
        raise SystemExit(f"--llama-stack {url}: GET /v1/weather/locations answered "
                         f"{response.status} {body[:200]!r}, not {{\"locations\": [...]}}")
    try:
        return f"Llama Stack {json.loads(info)['version']}" if version.status == 200 else "Llama Stack"
    except (ValueError, KeyError, TypeError):
        return "Llama Stack"


def llama_stack_case(url: str, name: str, args: Any) -> dict[str, Any]:
    """A Llama Stack server already running at ``url``, loaded as the GET case is
    (16 connections, a warm-up, the best of ``args.rounds`` runs)."""
    target = url.rstrip("/") + "/v1/weather/locations"
    runs = []
    for _ in range(args.rounds):
        load(target, 16, min(1.0, args.duration))  # warm-up
        runs.append(load(target, 16, args.duration))
    return {"case": "Llama Stack: GET /v1/weather/locations", "llama_stack": name, "url": url,
            "llama_stack_connections": 16, "result": best(runs)}


def stream_case(args: Any, config: Path) -> dict[str, Any]:
    """Events per second of a 1,000-event stream, and how late the first event arrives."""
    out: dict[str, Any] = {"case": "stream"}
    for label, start in (("stackflask", lambda p: stackflask(p, config)), ("floor", floor)):
        rates, firsts, ttfb = [], [], []
        with start(False) as server:
            for _ in range(args.rounds * 3):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                sent = time.perf_counter()
                conn.request("GET", f"/v1/bench/ticks?n={args.events}")
                response = conn.getresponse()
                first = response.readline()
                arrived_wall, arrived = time.time(), time.perf_counter()
                stamp = json.loads(first[len(b"data: "):])["t"]
                body = first + response.read()
                done = time.perf_counter()
                conn.close()
                assert body.count(b"data: ") == args.events
                rates.append(args.events / (done - sent))
                firsts.append((arrived_wall - stamp) * 1000)
                ttfb.append((arrived - sent) * 1000)
        out[label] = {"events_per_s": statistics.median(rates),
                      "first_event_delay_ms": statistics.median(firsts),
                      "time_to_first_event_ms": statistics.median(ttfb)}
    out["ratio"] = out["stackflask"]["events_per_s"] / out["floor"]["events_per_s"]
    return out


def startup_case(args: Any) -> dict[str, Any]:
    """Seconds to the first 200 on /v1/health, against importing flask and waitress."""
    imports, starts, rss_start, rss_load = [], [], 0.0, 0.0
    for _ in range(1 if args.quick else max(3, args.rounds)):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import flask, waitress"], check=True)
        imports.append(time.perf_counter() - began)
        with stackflask(False) as server:
            starts.append(server.startup)
            rss_start = rss_mib(server.proc.pid)
            load(server.url + "/v1/weather/locations", 16, args.duration)
            rss_load = rss_mib(server.proc.pid)
    return {"case": "startup", "stackflask_s": min(starts), "import_s": min(imports),
            "difference_s": min(starts) - min(imports), "rss_after_startup_mib": rss_start,
            "rss_after_load_mib": rss_load}


def growth_case(args: Any) -> dict[str, Any]:
    """Startup with many APIs, and a request to the first and the last route."""
    with tempfile.TemporaryDirectory() as tmp:
        config = generate(Path(tmp), args.apis, 10)
        env = env_for(config)
        env["PYTHONPATH"] = os.pathsep.join([tmp, env["PYTHONPATH"]])
        server = Server(waitress("app:create_app", call=True), env, ROOT, False)
        try:
            last = f"/v1/g{args.apis - 1:03d}/r9"
            first = load(server.url + "/v1/g000/r0", 1, args.duration)
            final = load(server.url + last, 1, args.duration)
        finally:
            server.stop()
    return {"case": "growth", "apis": args.apis, "routes": args.apis * 10,
            "startup_s": server.startup, "first_route": first, "last_route": final,
            "ratio": final["p50"] / first["p50"] if first["p50"] else 0}


def generate(folder: Path, apis: int, routes: int) -> Path:
    """A run config serving ``apis`` generated APIs of ``routes`` GET routes each."""
    (folder / "apis.d").mkdir()
    (folder / "gen_impl.py").write_text(
        "class Impl:\n"
        "    def __getattr__(self, name):\n"
        "        async def method():\n"
        "            return {'route': name}\n"
        "        return method\n\n\n"
        "def get_provider_impl(config, deps):\n"
        "    return Impl()\n"
    )
    providers = {}
    for a in range(apis):
        name = f"g{a:03d}"
        methods = "".join(
            f'    @webmethod(route="/{name}/r{r}", method="GET")\n'
            f"    async def r{r}(self) -> dict[str, str]: ...\n\n" for r in range(routes))
        (folder / f"gen_{name}.py").write_text(
            "from typing import Protocol\n\n"
            "from stackflask import Api, InlineProviderSpec, webmethod\n\n\n"
            "def available_providers():\n"
            f"    return [InlineProviderSpec(api=Api.{name}, provider_type='inline::gen', "
            "module='gen_impl')]\n\n\n"
            f"class P(Protocol):\n{methods}")
        (folder / "apis.d" / f"{name}.yaml").write_text(
            f"module: gen_{name}\nname: {name}\nprotocol: P\n")
        providers[name] = [{"provider_id": name, "provider_type": "inline::gen"}]
    config = folder / "run.yaml"
    config.write_text(json.dumps({"providers": providers, "external_apis_dir": "apis.d"}))
    return config


def llama_stack_table(r: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """The Llama Stack row beside this run's as-run GET rows at the same connections."""
    conns, ls = r["llama_stack_connections"], r["result"]
    rows = [(f"{r['llama_stack']} at {r['url']} (as started)", ls)]
    for other in results:
        if other.get("case", "").startswith("as run: GET") and other["connections"] == conns:
            rows += [(f"`{label}`", v) for label, v in other["as_run"].items()
                     if label in ("stackflask run", "waitress-serve floor_app:app")]
    out = [(f"{r['llama_stack']}, GET /v1/weather/locations at {conns} connections "
            "(stackflask and the floor: this run's as-run rows):"), "",
           "| server | rps | p50 ms | p99 ms | errors | rps / Llama Stack |", "|---|---|---|---|---|---|"]
    out += [f"| {label} | {v['rps']:.0f} | {v['p50']:.2f} | {v['p99']:.2f} | {v.get('errors', 0):.0f} "
            f"| {v['rps'] / ls['rps'] if ls['rps'] else 0:.2f} |" for label, v in rows]
    return [*out, ""]


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| case | conns | stackflask rps | p50 ms | p99 ms | floor rps | p50 ms | p99 ms | rps ratio | p50 ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "connections" in r and "as_run" not in r:
            s, f = r["stackflask"], r["floor"]
            lines.append(
                f"| {r['case']} | {r['connections']} | {s['rps']:.0f}{' (pinned)' if s['pinned'] else ''} "
                f"| {s['p50']:.2f} | {s['p99']:.2f} | {f['rps']:.0f}{' (pinned)' if f['pinned'] else ''} "
                f"| {f['p50']:.2f} | {f['p99']:.2f} | {r['ratio']:.2f} | {r['p50_ratio']:.2f} |")
    out = ["\n".join(lines), ""]
    for r in results:
        if "as_run" in r:
            out += [f"{r['case']} at {r['connections']} connections:", "",
                    "| server | rps | p50 ms | p99 ms | CPUs |", "|---|---|---|---|---|"]
            out += [f"| `{label}` | {v['rps']:.0f} | {v['p50']:.2f} | {v['p99']:.2f} | {v['cpus']} |"
                    for label, v in r["as_run"].items()]
            out.append("")
    for r in results:
        if "llama_stack" in r:
            out += llama_stack_table(r, results)
    for r in results:
        if "connections" not in r and "llama_stack" not in r:
            out.append(f"- {r['case']}: " + json.dumps(r, default=lambda v: round(v, 4)))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per case")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--llama-stack", metavar="URL",
                        help="also load GET URL/v1/weather/locations of a running Llama Stack server "
                             "(bench/llama_stack_server.py starts one at http://127.0.0.1:8322)")
    parser.add_argument("--loadgen", action="store_true",
                        help="use bench/loadgen.py even when wrk is installed")
    args = parser.parse_args()
    global FORCE_LOADGEN
    FORCE_LOADGEN = args.loadgen
    args.quick = bool(args.quick)
    args.events, args.apis = 1000, 100
    if args.quick:
        args.duration, args.rounds, args.events, args.apis = 1.0, 1, 100, 5
    try:
        llama_stack_name = llama_stack_check(args.llama_stack) if args.llama_stack else ""
    except SystemExit:
        shutil.rmtree(CLAIMS, ignore_errors=True)
        raise
    config = BENCH / "config" / "run.yaml"
    results = [
        compare("GET /v1/weather/locations", "/v1/weather/locations", c, args)
        for c in ((16,) if args.quick else (1, 16, 64))
    ]
    results.append(compare("POST /v1/bench/order (10 typed fields)", "/v1/bench/order", 16, args,
                           config, ORDER))
    results.append(compare("POST /v1/bench/order_pydantic (10 fields, pydantic)",
                           "/v1/bench/order_pydantic", 16, args, config, ORDER))
    get, post = "/v1/weather/locations", "/v1/bench/order"
    for c in (16,) if args.quick else (1, 16):
        results.append(as_run_case(f"as run: GET {get}", get, c, args, AS_RUN))
    if not args.quick:
        results.append(as_run_case(f"as run: POST {post} (10 typed fields)", post, 16, args,
                                   AS_RUN, config, ORDER))
    results.append(as_run_case(f"gunicorn workers: GET {get}", get, 16, args, WORKERS))
    if args.llama_stack:
        results.append(llama_stack_case(args.llama_stack, llama_stack_name, args))
    results.append(stream_case(args, config))
    results.append(startup_case(args))
    results.append(growth_case(args))
    print(f"load generator: {'wrk' if WRK and not FORCE_LOADGEN else 'bench/loadgen.py'}; taskset: {PIN}; "
          f"python {sys.version.split()[0]}; {os.cpu_count()} cores")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(CLAIMS, ignore_errors=True)


if __name__ == "__main__":
    main()
