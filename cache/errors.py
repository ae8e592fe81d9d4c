"""The one error type users see.

`UserError` means "the input or the request is wrong": the CLI prints its message as a single
line and exits non-zero, with no traceback. It lives in `cache/` because every other package
(embed, heads) depends on this one.
"""


class UserError(Exception):
    """A problem with the user's input or options, explained in one line."""


class WriteFailed(UserError):
    """Writing to the cache failed (disk full, I/O error); rows already marked done are intact."""


class UsageError(UserError):
    """A bad command-line value that only the library can detect (a head spec, a builder file):
    the CLI prints it as one line and exits 2, like click's own usage errors."""
