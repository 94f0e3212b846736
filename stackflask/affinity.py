"""Pinning a serving process to one CPU: ``server.cpu_affinity``, ``--cpus``.

Pure (no Flask); startup time, in ``stackflask run`` once the app is built and
in each gunicorn worker right after the fork (:mod:`stackflask.gunicorn_conf`).

A request crosses from a waitress thread to the loop thread and back, and each
crossing hands the GIL to another thread. On one CPU the hand-off is a switch
on that CPU; across CPUs it waits for the other CPU's thread to wake (on 2
cores, with the load generator on one, 1,876 requests per second at 16
connections against 2,285 pinned: bench/README.md). So the whole
process (every thread) runs on one CPU of the ones it may use:

- ``auto`` (the default): any CPU the process may use;
- a CPU list, ``1``, ``0,2``, ``0-3``: one of those;
- ``all``: no pinning, the process keeps the mask it was started with.

Which one: each process claims a CPU with a non-blocking ``flock`` on a file
per CPU and round (``cpu-<N>.<round>.lock`` in ``$XDG_RUNTIME_DIR/stackflask-cpus``,
else ``/tmp/stackflask-cpus-<uid>``), held for the process's life. The first
round's CPUs are tried from the highest-numbered down (CPU 0 takes most of
the kernel's interrupts), then the second round's, so two servers on one
machine share a CPU only when every CPU already serves one, and then spread
over the CPUs a round at a time. A lock dies with its process: nothing to clean up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

log = logging.getLogger("stackflask.server")

Setting = Literal["auto", "all"] | frozenset[int]

_RANGE = re.compile(r"(\d+)(?:-(\d+))?\Z")
#: Rounds of claims tried; past them (every CPU shared this many times over)
#: the first CPU is taken without a claim.
ROUNDS = 64
#: The lock files this process holds: open for its life, closed by its exit.
_claims: list[IO[bytes]] = []


def parse_cpus(text: str) -> Setting:
    """``auto``, ``all``, or the set of CPUs in a list such as ``1``, ``0,2``, ``0-3``.

    Raises :class:`ValueError` saying what is wrong, for a message that names
    the setting.
    """
    value = text.strip().lower()
    if value in ("auto", "all"):
        return value  # type: ignore[return-value]
    cpus: set[int] = set()
    for part in value.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not a CPU list; give auto, all, or CPU numbers such as "
                "1, 0,2 or 0-3"
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            raise ValueError(f"{text!r}: the range {part.strip()!r} runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def supported() -> bool:
    """Whether this platform can pin a process (Linux can; macOS cannot)."""
    return hasattr(os, "sched_setaffinity")


def candidates(setting: Setting) -> list[int] | None:
    """The CPUs ``setting`` lets the process choose from, highest first; ``None``
    for ``all`` or where the platform cannot pin.

    Raises :class:`ValueError` when it lists a CPU the process may not use.
    """
    if setting == "all" or not supported():
        return None
    allowed = os.sched_getaffinity(0)
    if setting == "auto":
        return sorted(allowed, reverse=True)
    assert isinstance(setting, frozenset)
    outside = sorted(setting - allowed)
    if outside:
        raise ValueError(
            f"CPU {format_cpus(outside)} {'is' if len(outside) == 1 else 'are'} not "
            f"allowed to this process (allowed: {format_cpus(allowed)}); give CPUs of "
            "those, auto or all"
        )
    return sorted(setting, reverse=True)


def claim_dir() -> Path:
    """The folder of the per-CPU lock files, made private to this user.

    ``/tmp``, not ``$TMPDIR``: servers started with different temporary
    folders must still see each other's claims.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        folder = Path(runtime) / "stackflask-cpus"
    else:
        folder = Path("/tmp") / f"stackflask-cpus-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def claim(cpus: list[int]) -> int:
    """One of ``cpus``: the first not yet claimed, in rounds; held while the process lives.

    Without a usable lock folder, the first of ``cpus``.
    """
    try:
        folder = claim_dir()
        for round_ in range(ROUNDS):
            for cpu in cpus:
                lock = open(folder / f"cpu-{cpu}.{round_}.lock", "ab")  # noqa: SIM115
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    lock.close()
                    continue
                _claims.append(lock)
                return cpu
    except OSError as exc:
        log.debug("cannot claim a CPU: %s", exc)
    return cpus[0]


def pin_process(cpu: int) -> None:
    """Run every thread of this process, and so every thread started later, on ``cpu``.

    ``sched_setaffinity(0)`` sets the calling thread's mask only; threads
    already running (the event loop's, the watchdog's, a provider's) are each
    set by their own id, until a pass finds no thread it has not set.
    """
    mask = {cpu}
    done: set[int] = set()
    while True:
        threads = _thread_ids() - done
        if not threads:
            return
        for tid in threads:
            try:
                os.sched_setaffinity(tid, mask)
            except ProcessLookupError:  # ended meanwhile
                pass
        done |= threads


def _thread_ids() -> set[int]:
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        ids = {t.native_id for t in threading.enumerate()}
        return {tid for tid in ids if tid is not None}


def apply(setting: Setting, where: str, info: Callable[..., None] = log.info) -> int | None:
    """Pin this process as ``setting`` (given by ``where``) says; the CPU, or
    ``None`` when not pinned.

    Says through ``info`` which CPU, or that the platform cannot pin. Raises
    :class:`ValueError` for a CPU the process may not use, before pinning anything.
    """
    if setting != "all" and not supported():
        info("%s: this platform cannot pin a process to a CPU; serving on every CPU", where)
        return None
    cpus = candidates(setting)
    if cpus is None:
        info("not pinned (%s: all): serving on CPUs %s", where,
             format_cpus(os.sched_getaffinity(0)))
        return None
    cpu = claim(cpus)
    pin_process(cpu)
    info("pinned to CPU %d of %s (%s: %s)", cpu, format_cpus(cpus), where,
         setting if isinstance(setting, str) else format_cpus(setting))
    return cpu


def format_cpus(cpus: set[int] | frozenset[int] | list[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``0-2,5``, as ``/proc/*/status`` writes CPU lists."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
