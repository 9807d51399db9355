"""The one exception type users see: a short message that names the problem and the fix."""


class ThaError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits non-zero."""
