"""The one error type users see.

`UserError` means "the input or the request is wrong": the CLI prints its message as a single
line and exits non-zero, with no traceback. It lives in `cache/` because every other package
(embed, heads) depends on this one.
"""


class UserError(Exception):
    """A problem with the user's input or options, explained in one line."""


class WriteFailed(UserError):
    """Writing to the cache failed (disk full, I/O error); rows already marked done are intact."""
