"""Benchmark pooled actors against pykka's ThreadingActor, in one run.

Measures, for `PooledActor` and `pykka.ThreadingActor`:

* resident memory and threads per idle actor (10,000 pooled, 2,000 threading;
  RSS read from /proc/self/statm),
* start time per actor,
* tells per second (1,000,000 tells to one actor, then an ask),
* blocking ask round trips per second from the main thread (20,000 asks each,
  in alternating rounds; median of the rounds),
* actor-to-actor ping-pong messages per second.

Then prints a table with the pooled/threading ratios and the design targets.

Run: `.venv/bin/python bench/bench_actors.py [--quick]`.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pykka  # noqa: E402

from pydynflow.actors.pooled import Dispatcher, PooledActor  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
QUICK = "--quick" in sys.argv
IDLE_POOLED = 2_000 if QUICK else 10_000
IDLE_THREADING = 500 if QUICK else 2_000
TELLS = 100_000 if QUICK else 1_000_000
ASKS = 2_000 if QUICK else 20_000
PING_PONGS = 20_000 if QUICK else 100_000


def rss_bytes() -> int:
    """Return this process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


class Counter:
    """Actor body: count int messages, answer "get" with the count."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return self.count
        self.count += 1
        return None


class Player:
    """Actor body: play ping-pong with a peer until the ball count reaches zero."""

    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done = done
        self.peer: pykka.ActorRef[Any] | None = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, pykka.ActorRef):
            self.peer = message
        elif message == 0:
            self.done.set()
        else:
            assert self.peer is not None
            self.peer.tell(message - 1)
        return None


def actor_classes(base: type[pykka.Actor]) -> tuple[type[Any], type[Any]]:
    """Build the benchmark actor classes on `base`."""
    counter = type(f"{base.__name__}Counter", (Counter, base), {})
    player = type(f"{base.__name__}Player", (Player, base), {})
    return counter, player


def stop_all(refs: list[pykka.ActorRef[Any]]) -> None:
    """Stop actors, sending every stop message before waiting for any."""
    for future in [ref.stop(block=False) for ref in refs]:
        future.get()


def ask_rates(refs: dict[str, pykka.ActorRef[Any]], rounds: int = 10) -> dict[str, float]:
    """Measure blocking asks/s from the main thread for each actor, as a median.

    Round trips are bound by how fast the OS wakes threads, which is noisy on a
    shared machine, so the implementations take turns, `ASKS / rounds` asks at a
    time, and each gets the median of its rounds.
    """
    per_round = ASKS // rounds
    rates: dict[str, list[float]] = {name: [] for name in refs}
    for _ in range(rounds):
        for name, ref in refs.items():
            ask = ref.ask
            began = time.perf_counter()
            for _ in range(per_round):
                ask("get")
            rates[name].append(per_round / (time.perf_counter() - began))
    return {name: statistics.median(values) for name, values in rates.items()}


def bench(base: type[pykka.Actor], idle: int, start: Callable[..., Any]) -> dict[str, float]:
    """Measure one actor implementation; `start(cls, *args)` starts an actor."""
    counter_cls, player_cls = actor_classes(base)
    results: dict[str, float] = {}

    # Idle actors: memory, threads, start time.
    gc.collect()
    threads_before = threading.active_count()
    rss_before = rss_bytes()
    began = time.perf_counter()
    refs = [start(counter_cls) for _ in range(idle)]
    refs[-1].ask("get")
    elapsed = time.perf_counter() - began
    gc.collect()
    results["RSS per idle actor (KB)"] = (rss_bytes() - rss_before) / idle / 1024
    results["threads added (idle set)"] = threading.active_count() - threads_before
    results["start per actor (us)"] = elapsed / idle * 1e6
    stop_all(refs)
    del refs

    # Tells to one actor, then an ask that sees them all.
    ref = start(counter_cls)
    tell = ref.tell
    began = time.perf_counter()
    for i in range(TELLS):
        tell(i)
    assert ref.ask("get") == TELLS
    results["tells/s"] = TELLS / (time.perf_counter() - began)

    ref.stop()

    # Actor-to-actor ping-pong.
    done = threading.Event()
    ping, pong = start(player_cls, done), start(player_cls, done)
    ping.tell(pong)
    pong.tell(ping)
    began = time.perf_counter()
    ping.tell(PING_PONGS)
    assert done.wait(120)
    results["ping-pong msgs/s"] = PING_PONGS / (time.perf_counter() - began)
    stop_all([ping, pong])
    return results


TARGETS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "RSS per idle actor (KB)": ("<= 4 KB", lambda p, t: p <= 4),
    "threads added (idle set)": ("<= max_workers (4)", lambda p, t: p <= 4),
    "start per actor (us)": ("<= 50 us", lambda p, t: p <= 50),
    "tells/s": (">= 600k", lambda p, t: p >= 600_000),
    "blocking asks/s": (">= 0.8x threading", lambda p, t: p >= 0.8 * t),
    "ping-pong msgs/s": ("", lambda p, t: True),
}


def main() -> int:
    """Run both benchmarks and print the comparison table."""
    dispatcher = Dispatcher(max_workers=4, name="bench")

    def start_pooled(cls: type[Any], *args: Any) -> pykka.ActorRef[Any]:
        return cls.start(*args, _dispatcher=dispatcher)

    def start_threading(cls: type[Any], *args: Any) -> pykka.ActorRef[Any]:
        return cls.start(*args)

    pooled = bench(PooledActor, IDLE_POOLED, start_pooled)
    threading_ = bench(pykka.ThreadingActor, IDLE_THREADING, start_threading)
    askers = {
        "pooled": start_pooled(actor_classes(PooledActor)[0]),
        "threading": start_threading(actor_classes(pykka.ThreadingActor)[0]),
    }
    rates = ask_rates(askers)
    pooled["blocking asks/s"], threading_["blocking asks/s"] = rates["pooled"], rates["threading"]
    stop_all(list(askers.values()))
    dispatcher.shutdown()

    print(
        f"python {sys.version.split()[0]}, pykka {metadata.version('pykka')}, "
        f"{os.cpu_count()} CPUs, {IDLE_POOLED} pooled / {IDLE_THREADING} threading idle actors"
    )
    header = f"{'metric':<26}{'pooled':>14}{'threading':>14}{'ratio':>9}  {'target':<20}"
    print(header)
    print("-" * len(header))
    missed = 0
    for metric, (target, check) in TARGETS.items():
        p, t = pooled[metric], threading_[metric]
        ratio = f"{p / t:.2f}" if t else "-"
        ok = check(p, t)
        missed += not ok
        verdict = "" if not target else ("ok" if ok else "MISSED")
        print(f"{metric:<26}{p:>14,.2f}{t:>14,.2f}{ratio:>9}  {target:<20}{verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
