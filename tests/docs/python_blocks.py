"""The python blocks of one README, run one by one in one namespace: the test's side of
tests/docs/python_runner.py (a process with the interpreter under test).

``PythonBlocks.run(block)`` sends one block and waits (at most ``timeout``) for its
answer on a pipe of its own, so whatever the blocks print, or threads they leave running
write, never mixes with the answers (that goes to ``log``). A block that raises fails
with AssertionError naming the README and line, with its traceback (in the README's own
line numbers) and output.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from tests.docs.blocks import Block
from tests.docs.processes import stop

RUNNER = Path(__file__).resolve().with_name("python_runner.py")


class PythonBlocks:
    """One runner process for one README, started on the first block (test thread only)."""

    def __init__(
        self,
        python: Path,
        work: Path,
        env: Mapping[str, str],
        log: IO[bytes],
        tail: Callable[[], str],
        timeout: float,
    ) -> None:
        self.python = python
        self.work = work
        self.env = dict(env)
        self.log = log
        self.tail = tail  # the log's last lines, for a runner that died
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None  # test thread only
        self._replies: int | None = None  # the pipe the answers come on (test thread only)

    def run(self, block: Block) -> None:
        """Run ``block`` in the README's namespace; AssertionError if it raises."""
        if self._process is None:
            self._start()
        assert self._process is not None and self._process.stdin is not None
        request = {"readme": block.readme, "line": block.first_code_line, "code": block.code}
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        self._process.stdin.flush()
        reply = self._reply(block)
        if not reply["ok"]:
            raise AssertionError(
                f"{block.where}: python block failed:\n{reply['error']}output:\n{reply['output']}"
            )

    def close(self) -> None:
        """End the runner (stdin closed, then SIGTERM) and close the answers' pipe."""
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            stop(self._process, signal.SIGTERM)
            self._process = None
        if self._replies is not None:
            os.close(self._replies)
            self._replies = None

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [str(self.python), str(RUNNER), str(write)],
                cwd=self.work, env=self.env, stdin=subprocess.PIPE, stdout=self.log,
                stderr=subprocess.STDOUT, pass_fds=(write,),
            )  # fmt: skip
        finally:
            os.close(write)
        self._replies = read

    def _reply(self, block: Block) -> dict[str, Any]:
        assert self._replies is not None and self._process is not None
        data = b""
        deadline = time.monotonic() + self.timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{block.where}: python block still running after {self.timeout:.0f}s"
                )
            ready, _, _ = select.select([self._replies], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._replies, 65536)
                if not chunk:
                    raise AssertionError(
                        f"{block.where}: the python runner exited "
                        f"({self._process.poll()}):\n{self.tail()}"
                    )
                data += chunk
        return json.loads(data)
