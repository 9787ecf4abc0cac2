"""Reliability tests: real subprocesses killed with SIGKILL, then recovered on the same store."""
