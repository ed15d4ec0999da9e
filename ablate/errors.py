"""User-facing errors.

An ``AblateError`` is a mistake the user can fix (unknown component, bad budget, missing data). The
CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class AblateError(Exception):
    """A problem the user caused and can fix; the message names the problem and the fix."""

    exit_code = 2
