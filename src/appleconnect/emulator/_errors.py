"""The exceptions the emulator's routes turn into answers.

:class:`OAuthError` is an error as Apple's endpoints answer it (``{"error", "error_description"}``);
:class:`ControlError` is a refusal of the control API (``{"detail": ...}``). The names differ from
the client library's ``AppleError`` on purpose: the library *receives* Apple's errors, the emulator
*sends* them.
"""

from __future__ import annotations


class OAuthError(Exception):
    """Raised when a request must be answered with one of Apple's OAuth errors.

    ``error`` is Apple's code (``invalid_client``, ``invalid_grant``...) and ``description`` the
    ``error_description`` sent with it. Apple answers HTTP 400 for every documented error,
    ``invalid_client`` included (TN3107).
    """

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        """The JSON body Apple sends: ``{"error": ..., "error_description": ...}``."""
        return {"error": self.error, "error_description": self.description}


class ControlError(Exception):
    """Raised by the control API on a bad request (unknown account, invalid value...)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
