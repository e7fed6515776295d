"""Waiting longer after each failure in a row: the one back-off the worker's loops share.

(The retry delay of a failed job is a different rule, with its own formula: retry.py.)
"""


def exponential(attempt: int, first: float, cap: float) -> float:
    """`first` doubled for each attempt after the first, at most `cap`; 0 before the first attempt."""
    if attempt <= 0:
        return 0.0
    return min(first * 2.0 ** (attempt - 1), cap)


class Backoff:
    """The delay before the next try of something that keeps failing (a fetch, a write to Redis)."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure in a row; returns the seconds to wait before trying again."""
        self.failures += 1
        return exponential(self.failures, self.first, self.cap)

    def succeeded(self) -> None:
        """The thing worked: the next failure waits `first` again."""
        self.failures = 0

    @property
    def failing(self) -> bool:
        """True after a failure, until the next success."""
        return self.failures > 0
