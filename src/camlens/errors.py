"""Errors the command line reports in one line (no traceback)."""


class UsageError(ValueError):
    """Bad input from the user: a file, a name, a number. The message says what is wrong."""
