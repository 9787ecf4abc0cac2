"""`ServiceMixin`: a `World` run as a service: `World.run_forever` until SIGTERM or SIGINT,
then a graceful stop (a second signal stops at once)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from typing import TYPE_CHECKING, Any

__all__ = ["ServiceMixin", "Wakeup"]


class ServiceMixin:
    """`run_forever` of a `World`: block until a signal or a stop, then stop gracefully."""

    # What it uses of `World` (set by `World.__init__`).
    log: Any
    fatal_error: BaseException | None
    _lock: threading.Lock
    _halted: bool
    _wakeups: list[Wakeup]

    if TYPE_CHECKING:

        def start(self) -> Any: ...
        def stop(self, timeout: float | None = None) -> Any: ...
        def _stop_now(self) -> None: ...

    def run_forever(
        self, stop_timeout: float | None = 30.0, install_signal_handlers: bool = True
    ) -> int:
        """Run until SIGTERM or SIGINT, then stop gracefully; return the process's exit status.

        Installs its signal handlers, starts the world if needed (a signal during the start
        stops it right after) and blocks until a SIGTERM or SIGINT arrives, or until the
        world stops otherwise (`stop` from another thread, or on its own when its
        database cannot be written: `fatal_error`). Then it stops the world, letting
        running steps finish for up to ``stop_timeout`` seconds (None: the world's
        ``stop_timeout``). A second signal during that stop stops at once, as
        ``stop(timeout=0)`` does: the steps still running are stored ``running`` and come
        back "Abnormal termination" when an executor world starts next.

        Signal handlers are installed only from the main thread (and only with
        ``install_signal_handlers``); the previous ones are restored on return. A daemon
        ends with ``sys.exit(world.run_forever())``.

        Returns:
            0 after a graceful stop, 1 if the world stopped because of `fatal_error`.
        """
        wakeup = Wakeup()
        signals: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:  # no lock here: a pipe write only
            signals.append(signum)
            wakeup.set()

        previous: dict[int, Any] = {}
        previous_wakeup_fd: int | None = None
        with self._lock:
            self._wakeups.append(wakeup)
        try:
            if install_signal_handlers and threading.current_thread() is threading.main_thread():
                # A signal may land on any thread: the wake-up fd wakes this one at once
                # (the handler itself runs only here, once this thread runs Python again).
                previous_wakeup_fd = signal.set_wakeup_fd(
                    wakeup.write_fd, warn_on_full_buffer=False
                )
                for handled in (signal.SIGTERM, signal.SIGINT):
                    previous[handled] = signal.signal(handled, on_signal)
            self.start()
            while not signals and not self._halted:
                wakeup.wait()
            if signals:
                self.log.info(
                    "signal received: stopping",
                    signal=signal.Signals(signals[0]).name,
                    timeout=stop_timeout,
                )
            self._stop_in_thread(stop_timeout, wakeup, signals)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if previous_wakeup_fd is not None:
                signal.set_wakeup_fd(previous_wakeup_fd)
            with self._lock:
                self._wakeups.remove(wakeup)
            wakeup.close()
        return 1 if self.fatal_error is not None else 0

    def _stop_in_thread(self, timeout: float | None, wakeup: Wakeup, signals: list[int]) -> None:
        """Stop on a thread of its own while this one watches for a second signal."""
        failed: list[BaseException] = []
        returned: list[bool] = []

        def stop() -> None:
            try:
                self.stop(timeout)
            except BaseException as exc:  # re-raised in the caller's thread below
                failed.append(exc)
            finally:
                returned.append(True)
                wakeup.set()

        seen = min(len(signals), 1)  # the first signal asked for this stop; more hurry it
        stopper = threading.Thread(target=stop, name="pydynflow-stop")
        stopper.start()
        while not returned or not self._halted:  # or another thread's stop is running
            # Look before waiting: two signals that came together woke this world once.
            if len(signals) > seen:
                seen = len(signals)
                self.log.warning("second signal: stopping now, running steps left running")
                self._stop_now()
            wakeup.wait()
        stopper.join()
        if failed:
            raise failed[0]

    def _wake_runners(self) -> None:
        """The world has stopped: wake `run_forever`."""
        with self._lock:
            self._halted = True
            wakeups = list(self._wakeups)
        for wakeup in wakeups:
            wakeup.set()


class Wakeup:
    """A self-pipe: `set` from any thread or a signal handler (it takes no lock), `wait` in
    one thread. (A `threading.Event` set from a signal handler can deadlock the thread the
    handler interrupted while it held the event's lock.)"""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self.write_fd, b"!")

    def wait(self, timeout: float | None = None) -> None:
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            os.read(self._read, 4096)

    def close(self) -> None:
        os.close(self._read)
        os.close(self.write_fd)
