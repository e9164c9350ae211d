"""Domain errors. Services raise them; the API's one exception handler renders them.

Each carries an HTTP status and a machine ``code``; the message is a sentence for a person.
"""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields


class ValidationFailed(DomainError):
    status_code = 400
    code = "invalid"


class NotFound(DomainError):
    """Also used for objects the caller may not see, so that ids do not leak."""

    status_code = 404
    code = "not_found"


class PermissionDenied(DomainError):
    status_code = 403
    code = "permission_denied"


class InvalidTransition(DomainError):
    """The object is not in a state that allows this change."""

    status_code = 409
    code = "invalid_transition"
