"""The `tha` command as tests run it: a real subprocess, as a user types it, output captured."""
from __future__ import annotations

import os
import subprocess
import sys

THA = [sys.executable, "-c", "from tha.runtime.main import main; main()"]


def tha(*args: object, env: dict[str, str] | None = None, timeout: float = 900.0, **options) -> subprocess.CompletedProcess:
    """Run `tha ARGS...` to completion; ``env`` is added to this process's environment."""
    return subprocess.run([*THA, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **options)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> None:
    """A failed run that printed exactly one `error:` line, containing every fragment, and no
    traceback; ``code`` checks the exit status too."""
    assert result.returncode != 0 if code is None else result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
