"""Errors the command line reports in one line (no traceback)."""


class UsageError(ValueError):
    """Bad input from the user: a file, a name, a number. The message says what is wrong."""


class UnknownName(UsageError):
    """A name (network, layer, method) that does not exist; the message lists the closest real ones."""
