"""Runs a README's python blocks in one namespace, one block per request (stdlib only).

Started by tests/docs/session.py with the interpreter under test (the project's venv, or
a fresh one from tests/packaging), in the README's work directory::

    python python_runner.py REPLY_FD

Each request is one JSON line on stdin, ``{"readme": ..., "line": N, "code": ...}``;
the block is compiled under the README's name with its own line numbers (a traceback
says ``File "README.md", line 245``) and run in the namespace every earlier block of
that README ran in, a module named ``__main__`` (as for a script). The answer is one
JSON line on REPLY_FD: ``{"ok": bool, "output": ..., "error": traceback or null}``.
The runner's own stdout/stderr (threads the blocks leave running) go wherever the
caller pointed them, never into the answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
import types


def main() -> None:
    """Serve requests until stdin closes."""
    replies = os.fdopen(int(sys.argv[1]), "w", buffering=1, encoding="utf-8")
    sys.path.insert(0, os.getcwd())  # the user's project, as `python` in it would see it
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    for line in sys.stdin:
        request = json.loads(line)
        padded = "\n" * (request["line"] - 1) + request["code"]
        output = io.StringIO()
        error = None
        try:
            code = compile(padded, request["readme"], "exec")
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                exec(code, module.__dict__)
        except BaseException:
            error = traceback.format_exc()
        ok = error is None
        replies.write(json.dumps({"ok": ok, "output": output.getvalue(), "error": error}) + "\n")


if __name__ == "__main__":
    main()
