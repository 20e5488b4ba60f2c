"""How a user is shown outside the database: one JSON shape for the REST API, the CLI and the
embedding popup."""

from __future__ import annotations

from typing import Any

from .models import User

__all__ = ["EMBED_FIELDS", "display_name", "user_json"]

EMBED_FIELDS = ("id", "sub", "email", "name", "role", "is_private_email")
"""The fields the embedding popup hands to the page that opened it."""


def display_name(user: User) -> str | None:
    """First and last name as one string, or ``None`` when Apple never gave a name."""
    return " ".join(p for p in (user.first_name, user.last_name) if p) or None


def user_json(user: User, *, transfer_sub: bool = False) -> dict[str, Any]:
    """The user as ``GET /api/get_currentuserinfo`` shows it; ``transfer_sub=True`` adds the
    team-transfer identifier (for the operator's ``appleconnect users show``)."""
    shown: dict[str, Any] = {
        "id": user.id,
        "sub": user.sub,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": display_name(user),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role,
        "is_private_email": user.is_private_email,
        "email_forwarding": user.email_forwarding,
        "created": user.created_at.isoformat(),
        "last_sign_in": user.last_sign_in_at.isoformat() if user.last_sign_in_at else None,
    }
    if transfer_sub:
        shown["transfer_sub"] = user.transfer_sub
    return shown
