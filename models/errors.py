"""The one exception type users see: a short message that names the problem and the fix, and
how a library's error is quoted inside one."""
from __future__ import annotations

import re

REASON_LIMIT = 120
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch bolds part of its weights_only advice
# torch's weights_only refusal opens with a paragraph of advice; this line names what it refused
_REFUSED = "WeightsUnpickler error: "


class ThaError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits non-zero."""


def failure_text(err: BaseException) -> str:
    """An unexpected failure as one status/log line: our own errors as they read, any other with
    its type (a bare KeyError('x') says nothing)."""
    return str(err) if isinstance(err, ThaError) else f"{type(err).__name__}: {err}"


def short_reason(err: BaseException, limit: int = REASON_LIMIT) -> str:
    """The line of ``err`` that says what went wrong, cut at a word boundary with "…" when over
    ``limit`` characters (a cut mid-word reads as a typo)."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    refused = [line[len(_REFUSED):] for line in lines if line.startswith(_REFUSED)]
    text = (refused or lines or [type(err).__name__])[0]
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else text[:limit]
    return cut.rstrip(" ,;:.") + "…"
