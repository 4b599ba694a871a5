"""Every adapter error as permanent or transient, in one place (Weaviate, the model server, the reranker).

Permanent: the dependency understood the request and refused it (HTTP 4xx other than 408/425/429, gRPC
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE,
UNIMPLEMENTED, UNAUTHENTICATED): retrying the same record can only fail again, so it is dead-lettered
now. Transient: the dependency was unreachable, slow or overloaded (connection errors, timeouts, 408, 425,
429, 5xx, gRPC UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN): retried
with backoff within the worker's retry budget. Errors this module does not know are neither: the worker
retries them a few times, then dead-letters them as `handler_error`.
"""

from __future__ import annotations

import re
from typing import Literal

import httpx
import weaviate.exceptions as wexc

from ragstream.ports.models import ModelStreamIncompleteError
from ragstream.runtime.errors import PermanentError, TransientError
from schemas.serving import FailureCode

ErrorClass = Literal["permanent", "transient"]

TRANSIENT_HTTP = frozenset({408, 425, 429})
# gRPC status codes (grpc.StatusCode values), by number: weaviate-client reports them as `status_code`.
TRANSIENT_GRPC = frozenset(
    {1, 2, 4, 8, 10, 13, 14}
)  # CANCELLED UNKNOWN DEADLINE RESOURCE ABORTED INTERNAL UNAVAILABLE
PERMANENT_GRPC = frozenset({3, 5, 6, 7, 9, 11, 12, 16})
_GRPC_NAMES = {
    "UNAVAILABLE": "transient",
    "DEADLINE_EXCEEDED": "transient",
    "RESOURCE_EXHAUSTED": "transient",
    "ABORTED": "transient",
    "INTERNAL": "transient",
    "INVALID_ARGUMENT": "permanent",
    "NOT_FOUND": "permanent",
    "PERMISSION_DENIED": "permanent",
    "FAILED_PRECONDITION": "permanent",
    "UNAUTHENTICATED": "permanent",
}
_GRPC_NAME = re.compile(r"StatusCode\.([A-Z_]+)")
_HTTP_STATUS = re.compile(r"status code:? (\d{3})", re.IGNORECASE)
# Words of a server that could not do the work now (rather than refusing the request itself).
# A node leaving or joining (a restart) has no replica to route to and closes its shards and indexes for a
# moment; starting, it answers before its schema and indexes are loaded ("could not find class X in
# schema", "tried to browse non-existing index"). Found by bench.chaos: each was dead-lettered as
# weaviate_rejected during a Weaviate restart. A collection that is really gone then spends the retry
# budget before its dead letter (retries_exhausted), or pauses the partition, by setting.
_TRANSIENT_TEXT = re.compile(
    r"timeout|timed out|deadline|unavailable|connection|connect |refused|reset by peer|broken pipe|"
    r"not ready|read-only|readonly|too many|overload|shutting down|try again|temporar|"
    r"shut ?down|no (?:read|write) replica|enough replicas|is closed|"
    r"could not find class|non-existing index|(?:class|collection) \S+ not found|class not found|"
    r"index for class \S+ not found|does not exist locally|shard does not exist",
    re.IGNORECASE,
)
# Errors raised by the adapters' client libraries (what a handler catches and translates).
ADAPTER_ERRORS: tuple[type[BaseException], ...] = (
    wexc.WeaviateBaseError,
    httpx.HTTPError,
    ConnectionError,
    TimeoutError,
)


UNREACHABLE = (
    wexc.WeaviateConnectionError,
    wexc.WeaviateTimeoutError,
    wexc.WeaviateGRPCUnavailableError,
    wexc.WeaviateClosedClientError,
    wexc.WeaviateStartUpError,
)


def http_class(status: int) -> ErrorClass:
    if status in TRANSIENT_HTTP or status >= 500:
        return "transient"
    return "permanent" if 400 <= status < 500 else "transient"


def grpc_class(code: int) -> ErrorClass:
    return "permanent" if code in PERMANENT_GRPC else "transient"


def _weaviate_class(exc: wexc.WeaviateBaseError) -> ErrorClass:
    if isinstance(exc, wexc.UnexpectedStatusCodeError):
        code = exc.status_code
        return grpc_class(code) if code < 100 else http_class(code)
    if isinstance(
        exc, wexc.WeaviateConnectionError | wexc.WeaviateTimeoutError | wexc.WeaviateGRPCUnavailableError
    ):
        return "transient"
    if isinstance(exc, wexc.WeaviateClosedClientError | wexc.WeaviateStartUpError):
        return "transient"
    if isinstance(exc, wexc.WeaviateInvalidInputError):
        return "permanent"
    # Query and batch errors carry the server's answer as text: a gRPC status name or an HTTP code.
    text = str(exc)
    if m := _GRPC_NAME.search(text):
        return _GRPC_NAMES.get(m.group(1), "transient")  # type: ignore[return-value]
    if m := _HTTP_STATUS.search(text):
        return http_class(int(m.group(1)))
    # No status: the server's own words decide. A server that answered with a validation error (wrong
    # vector length, bad property, unknown tenant) refuses that input for ever; unreachable or
    # overloaded servers say so.
    return "transient" if _TRANSIENT_TEXT.search(text) else "permanent"


def classify(exc: BaseException) -> ErrorClass | None:
    """The class of an adapter error, or None when it is not one this module knows."""
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    if isinstance(exc, wexc.WeaviateBaseError):
        return _weaviate_class(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        return http_class(exc.response.status_code)
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return "transient"
    return None


def translate(exc: BaseException, dependency: str) -> Exception:
    """The worker's error for an adapter error: TransientError (retried) or PermanentError (dead-lettered
    with reason `<dependency>_rejected`). The message names the class, never a credential."""
    cls = classify(exc)
    detail = f"{dependency}: {type(exc).__name__}: {exc}"[:1000]
    if cls == "permanent":
        return PermanentError(f"{dependency}_rejected", detail)
    if cls == "transient":
        return TransientError(detail)
    return exc if isinstance(exc, Exception) else RuntimeError(detail)


def failure_code(exc: BaseException) -> FailureCode:
    """The closed-set code of a failed answer: what broke, never how (that stays in logs)."""
    if isinstance(exc, ModelStreamIncompleteError):
        return "model_stream_incomplete"
    if isinstance(exc, httpx.HTTPStatusError):
        return "model_rejected" if classify(exc) == "permanent" else "model_unavailable"
    if isinstance(exc, httpx.HTTPError):
        return "model_unavailable"
    if isinstance(exc, wexc.WeaviateBaseError):
        return "store_unavailable"
    return "internal"
