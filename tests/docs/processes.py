"""Waiting for and stopping the processes a doc session starts (always by PID)."""

from __future__ import annotations

import signal
import subprocess
import time

import requests


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Return once 127.0.0.1:``port`` answers HTTP; AssertionError if ``process`` exits
    first or 15 s pass."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}")
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"{what} not listening on {port} after 15s")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to a process still running and wait; SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
