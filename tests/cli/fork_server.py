"""A process that runs each ``pydynflow`` command of the CLI tests in a fork of itself.

``python -m tests.cli.fork_server``: it imports the command line once, starts no thread,
then reads one JSON request per line on stdin: ``{"args", "env", "cwd", "stdin", "out",
"err"}``. For each it forks a child that takes that environment and directory, reads stdin
from the file ``stdin`` (or nothing), writes its stdout and stderr to the files ``out`` and
``err``, runs ``pydynflow ARGS...`` (`pydynflow.cli.cli`, what the console script runs) and
exits with its status. The server answers ``{"pid": ..., "status": ...}`` on stdout once the
child has exited.

Each command is still a process of its own, with its own client world: the fork only skips
Python's start and the import of the package (most of a command's time on a slow machine).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

import pydynflow.cli
import pydynflow.cli.db
import pydynflow.cli.operate
import pydynflow.cli.plans
import pydynflow.cli.worlds  # noqa: F401  # imported once here, not in every command


def _child(request: dict[str, Any]) -> None:
    """In the fork: become the command's process, run it, exit with its status."""
    status = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = request["stdin"] or os.devnull
        for fd, path, flags in (
            (0, stdin, os.O_RDONLY),
            (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115  # the new fd 0
        try:
            pydynflow.cli.cli(args=request["args"], prog_name="pydynflow")
            status = 0
        except SystemExit as exit_:
            code = exit_.code
            status = code if isinstance(code, int) else (0 if code is None else 1)
        atexit._run_exitfuncs()
    except BaseException:  # a failure of the harness itself: say it on the command's stderr
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main() -> None:
    """Serve requests until stdin closes."""
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, wait_status = os.waitpid(pid, 0)
        replies.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(wait_status)}))
        replies.write("\n")
        replies.flush()


if __name__ == "__main__":
    main()
