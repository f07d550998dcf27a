"""The error type for user mistakes (the CLI side that prints it is :func:`utils.errors.run_cli`)."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the command line, data or checkpoint that the user can fix.

    The message must name the problem and the fix in one line; entry scripts print it
    without a traceback (see :func:`utils.errors.run_cli`).
    """
