"""The viewer's limits and its refusal, without torch (the command line builds its options from them)."""

from __future__ import annotations

from camlens.errors import UsageError

MAX_UPLOAD_BYTES = 20_000_000  # 20 MB
MAX_UPLOAD_PIXELS = 40_000_000  # 40 megapixels: a 10,000 x 10,000 image is refused


class ServeError(UsageError):
    """A request the viewer refuses; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def megabytes(size: int) -> str:
    """A byte count for messages: ``"20 MB"``, ``"0.2 MB"``.

    >>> megabytes(20_000_000), megabytes(200_000)
    ('20 MB', '0.2 MB')
    """
    return f"{size / 1e6:.0f} MB" if size >= 10e6 else f"{size / 1e6:.1f} MB"
