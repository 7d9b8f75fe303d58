"""Errors the command line reports in one line (no traceback), and the warning an explanation notes."""


class UsageError(ValueError):
    """Bad input from the user: a file, a name, a number. The message says what is wrong."""


class UnknownName(UsageError):
    """A name (network, layer, method) that does not exist; the message lists the closest real ones."""


class ExplanationNote(UserWarning):
    """What ``explain`` found legal but suspicious (a map that shows nothing, an assumed layout, a guided map
    with no activation routed). Each is also kept on the result (``warnings``, ``image_warnings``); the
    command line prints them under the image they concern instead of as Python warnings."""
