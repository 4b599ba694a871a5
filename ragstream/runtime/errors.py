"""The two error classes a handler raises: the worker retries the first and dead-letters the second."""

from __future__ import annotations


class TransientError(Exception):
    """Retry later; the effect may succeed once a dependency is back."""


class PermanentError(Exception):
    """This record can never succeed: dead-letter it with a reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class OutputTooLargeError(PermanentError):
    """An output of this record would not fit a Kafka record: retrying cannot help."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__("output_too_large", f"output for {topic} is {size} bytes; the limit is {limit}")


class RetriesExhaustedError(PermanentError):
    """A transient failure outlived the record's retry budget (attempts or deadline)."""

    def __init__(self, attempts: int, elapsed_s: float, last: BaseException) -> None:
        super().__init__(
            "retries_exhausted",
            f"{attempts} attempts over {elapsed_s:.1f}s; last: {type(last).__name__}: {last}"[:1000],
        )
