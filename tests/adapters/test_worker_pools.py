"""The `WorkerPool` contract, run against `ThreadWorkers` and `ProcessWorkers`, then the
process pool's supervision: every way a worker can die fails only its own job, and the pool
starts a replacement.

One pool per test class (the fork server and the workers start once); jobs are module-level
functions, so the worker processes import them from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action
from pydynflow.action import RUN
from pydynflow.adapters.executors.processes import ProcessWorkers, WorkerDied
from pydynflow.adapters.executors.threads import ThreadWorkers
from pydynflow.phases import PhaseOutcome, execute_run
from pydynflow.states import StepState

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds before a test gives up on its jobs


# -- jobs (module level: worker processes import them) --------------------------------------


def meet(barrier: Any) -> int:
    """Wait at ``barrier`` with the other jobs; return this job's arrival index."""
    return int(barrier.wait(20))


def square(n: int) -> int:
    return n * n


def nap(seconds: float) -> int:
    """A job that keeps its worker busy (the workload, not synchronisation)."""
    time.sleep(seconds)  # the workload (noqa: sleep-ok)
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    ctypes.string_at(0)


def system_exit(code: int) -> None:
    sys.exit(code)


def return_generator() -> Any:
    return (n for n in range(3))  # dill pickles locks, files and lambdas, not generators


class TwoArgError(Exception):
    """Pickles but does not unpickle: ``__init__`` wants two arguments, ``args`` holds one."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


class LockedError(Exception):
    """Does not pickle at all: it holds a generator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.items = (n for n in range(3))


def raise_two_arg() -> None:
    raise TwoArgError(1, 2)


def raise_locked() -> None:
    raise LockedError("locked out")


class Doubler(Action):
    """Double ``input["n"]``; fail with a `LockedError` (unpicklable) if ``n`` is negative."""

    def run(self) -> None:
        if self.input["n"] < 0:
            raise LockedError("negative")
        self.output["doubled"] = self.input["n"] * 2


def run_doubler(n: int) -> PhaseOutcome:
    return execute_run(Doubler(id=1, execution_plan_id="p", input={"n": n}, phase=RUN))


# -- helpers ----------------------------------------------------------------------------------


def run_all(pool: Any, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """Submit every job at once; return ``(result, error)`` per job, in submission order."""
    results: list[Any] = [None] * len(jobs)
    left = [len(jobs)]
    lock = threading.Lock()
    done = threading.Event()

    def on_done_for(index: int) -> Callable[[Any, Any], None]:
        def on_done(result: Any, error: Any) -> None:
            with lock:
                results[index] = (result, error)
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        return on_done

    for index, (fn, args) in enumerate(jobs):
        pool.submit(fn, args, on_done_for(index))
    assert done.wait(WAIT), f"{left[0]} of {len(jobs)} jobs never finished"
    return results


def run_one(pool: Any, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    return run_all(pool, [(fn, args)])[0]


def wait_for_workers(pool: ProcessWorkers, count: int) -> None:
    assert count == pool.size, "the pool notifies when it is back to its size"
    assert pool.wait_for_workers(WAIT), f"{pool.workers} workers, expected {count}"


# -- the contract -------------------------------------------------------------------------------


class WorkerPoolContract:
    """Tests every `WorkerPool` must pass; subclasses say how to make one."""

    size = 2

    @staticmethod
    def make_pool(size: int, name: str) -> Any:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def pool(cls) -> Iterator[Any]:
        pool = cls.make_pool(cls.size, "contract")
        yield pool
        pool.shutdown(wait=True)

    def test_results_come_back_through_on_done(self, pool: Any) -> None:
        results = run_all(pool, [(square, (n,)) for n in range(20)])
        assert results == [(n * n, None) for n in range(20)]

    def test_jobs_run_in_parallel(self, pool: Any) -> None:
        # `size` jobs meet at a barrier: run one after another, they would time out.
        barrier = self.make_barrier(self.size)
        results = run_all(pool, [(meet, (barrier,))] * self.size)
        assert all(error is None for _, error in results), results
        assert sorted(result for result, _ in results) == list(range(self.size))

    @staticmethod
    def make_barrier(parties: int) -> Any:
        return threading.Barrier(parties)

    def test_many_jobs(self, pool: Any) -> None:
        results = run_all(pool, [(square, (n,)) for n in range(500)])
        assert [result for result, _ in results] == [n * n for n in range(500)]

    def test_exceptions_are_reported(self, pool: Any) -> None:
        results = run_all(pool, [(fail, ("boom",)), (square, (3,))])
        (result, error), after = results
        assert result is None and isinstance(error, ValueError) and str(error) == "boom"
        assert after == (9, None)  # the pool goes on

    def test_phase_outcome_comes_back(self, pool: Any) -> None:
        outcome, error = run_one(pool, run_doubler, 21)
        assert error is None and outcome.state is StepState.SUCCESS
        assert outcome.output == {"doubled": 42}

    def test_shutdown_then_submit_raises(self) -> None:
        pool = self.make_pool(1, "closing")
        results = run_all(pool, [(nap, (0.05,))] * 3)
        assert all(error is None for _, error in results)
        finished = threading.Event()
        pool.submit(nap, (0.2,), lambda result, error: finished.set())
        pool.shutdown(wait=True)
        assert finished.is_set()  # running and queued jobs finish first
        with pytest.raises(RuntimeError, match="'closing'"):
            pool.submit(square, (2,), lambda result, error: None)
        pool.shutdown(wait=True)  # idempotent


class TestThreadWorkers(WorkerPoolContract):
    @staticmethod
    def make_pool(size: int, name: str) -> Any:
        return ThreadWorkers(size, name)


class TestProcessWorkers(WorkerPoolContract):
    @staticmethod
    def make_pool(size: int, name: str) -> Any:
        return ProcessWorkers(size, name)

    @staticmethod
    def make_barrier(parties: int) -> Any:
        import multiprocess

        manager = multiprocess.get_context("forkserver").Manager()
        return manager.Barrier(parties, timeout=20)

    def test_jobs_run_in_other_processes(self, pool: ProcessWorkers) -> None:
        results = run_all(pool, [(nap, (0.2,))] * self.size)
        pids = {pid for pid, _ in results}
        assert len(pids) == self.size and os.getpid() not in pids
        assert pool.workers == pool.size == self.size

    def test_unpicklable_exception_becomes_runtime_error(self, pool: ProcessWorkers) -> None:
        for job, text in ((raise_two_arg, "TwoArgError: 1/2"), (raise_locked, "locked out")):
            result, error = run_one(pool, job)
            assert result is None and type(error) is RuntimeError
            assert text in str(error)

    def test_unpicklable_result_is_an_error(self, pool: ProcessWorkers) -> None:
        result, error = run_one(pool, return_generator)
        assert result is None and isinstance(error, RuntimeError)
        assert "return_generator does not pickle" in str(error)

    def test_unpicklable_arguments_are_an_error(self, pool: ProcessWorkers) -> None:
        result, error = run_one(pool, square, (n for n in range(3)))
        assert result is None and isinstance(error, TypeError)

    def test_a_failing_on_done_does_not_stop_the_pool(
        self, pool: ProcessWorkers, caplog: pytest.LogCaptureFixture
    ) -> None:
        exploded = threading.Event()

        def explode(result: Any, error: Any) -> None:
            exploded.set()
            raise RuntimeError("callback bug")

        pool.submit(square, (2,), explode)
        assert exploded.wait(20)
        assert run_one(pool, square, 5) == (25, None)  # on_done runs, and logs, before this
        assert "on_done callback of worker pool 'contract' failed" in caplog.text

    def test_phase_outcome_drops_an_unpicklable_exception(self, pool: ProcessWorkers) -> None:
        outcome, error = run_one(pool, run_doubler, -1)
        assert error is None and outcome.state is StepState.ERROR
        assert outcome.exception is None  # the live exception stayed in the worker
        assert outcome.error.exception_class.endswith("LockedError")
        assert outcome.error.message == "negative" and outcome.error.backtrace


def _died(exitcode: int | None, signal_number: int | None, text: str) -> Any:
    def check(error: Any) -> None:
        assert isinstance(error, WorkerDied), error
        assert (error.exitcode, error.signal) == (exitcode, signal_number)
        assert text in str(error) and str(error).startswith("worker process ")

    return check


class TestProcessSupervision:
    """A dying worker fails its own job only, and is replaced."""

    size = 2

    @pytest.fixture(scope="class")
    @classmethod
    def pool(cls) -> Iterator[ProcessWorkers]:
        with ProcessWorkers(cls.size, "supervised") as pool:
            yield pool

    def pids(self, pool: ProcessWorkers) -> set[int]:
        return {pid for pid, _ in run_all(pool, [(nap, (0.1,))] * self.size)}

    def test_raising_is_an_error_not_a_death(self, pool: ProcessWorkers) -> None:
        before = self.pids(pool)
        result, error = run_one(pool, fail, "just an error")
        assert isinstance(error, ValueError) and not isinstance(error, WorkerDied)
        assert "in worker process" in "".join(getattr(error, "__notes__", []))
        assert self.pids(pool) == before

    @pytest.mark.parametrize(
        ("job", "args", "check"),
        [
            (exit_with, (3,), _died(3, None, "died with exit code 3")),
            (kill_self, (), _died(None, 9, "killed by signal SIGKILL (9)")),
            (segfault, (), _died(None, 11, "killed by signal SIGSEGV (11)")),
            (system_exit, (4,), _died(4, None, "died with exit code 4")),
        ],
        ids=["os._exit", "SIGKILL", "segfault", "sys.exit"],
    )
    def test_death_fails_only_its_job(
        self, pool: ProcessWorkers, job: Any, args: Any, check: Any
    ) -> None:
        before = self.pids(pool)
        others = [(square, (n,)) for n in range(50)]
        results = run_all(pool, [*others[:25], (job, args), *others[25:]])
        result, error = results.pop(25)
        assert result is None
        check(error)
        assert results == [(n * n, None) for n in range(50)]
        wait_for_workers(pool, self.size)
        after = self.pids(pool)
        assert len(after) == self.size and len(after - before) == 1  # one replacement

    def test_deaths_in_a_row(self, pool: ProcessWorkers) -> None:
        results = run_all(pool, [(exit_with, (n,)) for n in range(1, 6)] + [(square, (7,))])
        assert [error.exitcode for _, error in results[:5]] == [1, 2, 3, 4, 5]
        assert results[5] == (49, None)
        wait_for_workers(pool, self.size)


def test_shutdown_stops_every_worker_and_the_supervisor() -> None:
    pool = ProcessWorkers(2, "stopping")
    assert pool.workers == 2
    finished = threading.Semaphore(0)
    for _ in range(4):
        pool.submit(nap, (0.1,), lambda result, error: finished.release())
    started = time.perf_counter()
    pool.shutdown()  # does not wait...
    assert time.perf_counter() - started < 0.1
    for _ in range(4):  # ...but the queued jobs still run
        assert finished.acquire(timeout=WAIT)
    pool.shutdown(wait=True)
    assert pool.workers == 0
    assert not [t for t in threading.enumerate() if t.name == "stopping-supervisor"]


MAIN_SCRIPT = """
import json, sys, threading
sys.path.insert(0, {root!r})
from pydynflow.adapters.executors.processes import ProcessWorkers


class Greeting:
    def __init__(self, text):
        self.text = text


class Greet:  # action-like: input on the instance, run() returns its output
    def __init__(self, name):
        self.name = name

    def run(self):
        return Greeting("hello " + self.name)

    def class_id(self):
        return id(type(self))


class Refused(Exception):
    pass


if __name__ == "__main__":
    class Local:  # only in this process: the fork server's re-import does not define it
        def run(self, n):
            return {{"local": n + 1}}

        def class_id(self):
            return id(type(self))

    def refuse():
        raise Refused("no")

    out = []
    done = threading.Semaphore(0)
    on_done = lambda result, error: (out.append((result, error)), done.release())
    with ProcessWorkers(1, "main") as pool:
        for fn, args in ((Greet("world").run, ()), (Local().run, (41,)), (refuse, ())):
            pool.submit(fn, args, on_done)
            assert done.acquire(timeout=20)
        for _ in range(2):  # a class is loaded once per worker, not once per job
            for fn in (Greet("x").class_id, Local().class_id):
                pool.submit(fn, (), on_done)
                assert done.acquire(timeout=20)
    (greeting, e1), (local, e2), (none, refused), *ids = out
    print(json.dumps({{
        "greeting": [type(greeting).__name__, greeting.text, e1],
        "local": [local, e2],
        "refused": [none, type(refused).__name__, str(refused)],
        "classes_loaded_once": ids[:2] == ids[2:],
    }}))
"""


def test_classes_defined_in_main_work(tmp_path: Path) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT.format(root=str(ROOT))))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "greeting": ["Greeting", "hello world", None],
        "local": [{"local": 42}, None],
        "refused": [None, "Refused", "no"],
        "classes_loaded_once": True,
    }


def test_jobs_queued_inside_waking_later_start_at_its_end() -> None:
    from pydynflow.promise import waking_later

    pool = ThreadWorkers(2, name="test-later")
    done = threading.Event()
    ran: list[int] = []

    def on_done(result: Any, error: Any) -> None:
        ran.append(result)
        done.set()

    try:
        with waking_later():
            pool.submit(lambda: 7, (), on_done)
            assert pool.threads == 0 and ran == []  # not queued yet: no thread even started
        assert done.wait(30) and ran == [7]
    finally:
        pool.shutdown(wait=True)


ORPHAN_SCRIPT = """
import os, sys, threading
sys.path.insert(0, {root!r})
from pydynflow.adapters.executors.processes import ProcessWorkers


def hang():
    print(os.getpid(), os.getppid(), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    pool = ProcessWorkers(1, "orphaned")
    pool.submit(hang, (), lambda result, error: None)
    threading.Event().wait()  # until the test kills this process
"""


def test_a_busy_worker_exits_at_once_when_the_pool_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "orphan_script.py"
    script.write_text(textwrap.dedent(ORPHAN_SCRIPT.format(root=str(ROOT))))
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert owner.stdout is not None
    watches: list[int] = []
    try:
        assert select.select([owner.stdout], [], [], WAIT)[0], "the job did not start"
        pids = owner.stdout.readline().split()
        assert len(pids) == 2, f"the pool's process ended (rc={owner.poll()})"
        watches = [os.pidfd_open(int(pid)) for pid in pids]  # the worker, the fork server
        owner.kill()
        owner.wait(WAIT)
        deadline = time.monotonic() + 2.0
        outliving = [
            pid
            for pid, fd in zip(pids, watches, strict=True)
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]
        ]
        assert not outliving, "outlived the pool's process (worker, fork server)"
    finally:
        owner.kill()
        owner.wait(WAIT)
        owner.stdout.close()
        for fd in watches:
            with contextlib.suppress(ProcessLookupError):  # gone already, as expected
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
