"""Every error tintdb raises, embedded or over HTTP.

The names and wire names match chromadb's, so code written against chromadb keeps
catching the same things. Where chromadb raised a builtin (``ValueError``), our class
also inherits that builtin, so ``except ValueError`` keeps working.

    TintError (alias ChromaError)
    ├── InvalidArgumentError (ValueError)     400  bad input of any kind
    │   ├── InvalidDimensionException         400  a vector's length differs
    │   ├── DuplicateIDError                  400  the same id twice in one call
    │   ├── InvalidUUIDError                  400
    │   └── EmbeddingFunctionError            400  missing, failing or mismatched
    ├── IDAlreadyExistsError (ValueError)     409  add() of an id that exists
    ├── UniqueConstraintError (ValueError)    409  a name is taken
    ├── NotFoundError (ValueError)            404
    ├── AuthError (alias ChromaAuthError)     401
    ├── AuthorizationError                    403
    ├── PayloadTooLargeError                  413
    ├── BatchSizeExceededError                413  compatibility only: no batch limit
    ├── StoreLockedError                      409  the store is held exclusively
    ├── ResetDisabledError (ValueError)       403
    ├── RateLimitError                        429
    ├── QuotaError                            400
    ├── VersionMismatchError                  500
    ├── InvalidHTTPVersion                    500
    └── InternalError                         500  a bug: please report it
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthorizationError",
    "BatchSizeExceededError",
    "ChromaAuthError",
    "ChromaError",
    "DuplicateIDError",
    "EmbeddingFunctionError",
    "IDAlreadyExistsError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidDimensionException",
    "InvalidHTTPVersion",
    "InvalidUUIDError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaError",
    "RateLimitError",
    "ResetDisabledError",
    "StoreLockedError",
    "TintError",
    "UniqueConstraintError",
    "VersionMismatchError",
    "error_from_wire",
    "error_types",
]


class TintError(Exception):
    """Base of every tintdb error; ``name()`` is the wire name, ``code()`` the HTTP status."""

    wire_name = "ChromaError"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def name(cls) -> str:
        return cls.wire_name

    def code(self) -> int:
        return self.status


ChromaError = TintError


class InvalidArgumentError(TintError, ValueError):
    wire_name = "InvalidArgumentError"
    status = 400


class InvalidDimensionException(InvalidArgumentError):
    wire_name = "InvalidDimension"


class DuplicateIDError(InvalidArgumentError):
    wire_name = "DuplicateID"


class InvalidUUIDError(InvalidArgumentError):
    wire_name = "InvalidUUID"


class EmbeddingFunctionError(InvalidArgumentError):
    wire_name = "InvalidArgumentError"


class IDAlreadyExistsError(TintError, ValueError):
    wire_name = "IDAlreadyExists"
    status = 409


class UniqueConstraintError(TintError, ValueError):
    wire_name = "UniqueConstraintError"
    status = 409


class NotFoundError(TintError, ValueError):
    wire_name = "NotFoundError"
    status = 404


class AuthError(TintError):
    wire_name = "AuthError"
    status = 401


ChromaAuthError = AuthError  # chromadb's class name for the same error


class AuthorizationError(TintError):
    wire_name = "AuthorizationError"
    status = 403


class PayloadTooLargeError(TintError):
    wire_name = "ChromaError"
    status = 413


class BatchSizeExceededError(TintError):
    wire_name = "BatchSizeExceededError"
    status = 413


class StoreLockedError(TintError):
    wire_name = "ChromaError"
    status = 409


class ResetDisabledError(TintError, ValueError):
    wire_name = "ChromaError"
    status = 403


class RateLimitError(TintError):
    wire_name = "RateLimitError"
    status = 429


class QuotaError(TintError):
    wire_name = "QuotaError"
    status = 400


class VersionMismatchError(TintError):
    wire_name = "VersionMismatchError"
    status = 500


class InternalError(TintError):
    wire_name = "InternalError"
    status = 500


class InvalidHTTPVersion(TintError):
    """A server that does not speak the protocol version asked for."""

    wire_name = "InvalidHTTPVersion"
    status = 500


_BY_WIRE_NAME: dict[str, type[TintError]] = {
    cls.wire_name: cls
    for cls in (
        TintError,
        InvalidArgumentError,
        InvalidDimensionException,
        DuplicateIDError,
        InvalidUUIDError,
        IDAlreadyExistsError,
        UniqueConstraintError,
        NotFoundError,
        AuthError,
        AuthorizationError,
        BatchSizeExceededError,
        RateLimitError,
        QuotaError,
        VersionMismatchError,
        InternalError,
        InvalidHTTPVersion,
    )
}
# chromadb's name for the table above: wire name -> error class.
error_types = _BY_WIRE_NAME

_BY_STATUS: dict[int, type[TintError]] = {
    400: InvalidArgumentError,
    401: AuthError,
    403: AuthorizationError,
    404: NotFoundError,
    409: UniqueConstraintError,
    413: PayloadTooLargeError,
    422: InvalidArgumentError,
    429: RateLimitError,
}


def error_from_wire(status: int, name: str | None, message: str) -> TintError:
    """Rebuild the error a server sent: by wire name first, then by HTTP status."""
    cls = _BY_WIRE_NAME.get(name or "")
    if cls is None or cls is TintError:
        cls = _BY_STATUS.get(status, cls or InternalError)
    return cls(message)
