"""A Jinja2 macro that puts the Sign in with Apple button of an Apple Connect service on a page.

For Python web apps (Flask, FastAPI/Starlette, Django with Jinja2...)::

    from appleconnect.server.jinja import install

    install(env, service_url="https://login.example.com")   # env: your jinja2.Environment

and in a template::

    {{ sign_in_with_apple(next="/account") }}
    {{ sign_in_with_apple(kind="left", color="white", border=True, width=280, locale="de_DE") }}

It renders a plain link to the service's ``/auth/apple/start`` holding the service's button image:
no JavaScript, and the accessible name is the button's label ("Sign in with Apple"). The
parameters are Apple's (docs/buttons.md); a wrong one raises :class:`ButtonParamsError` when the
template renders, so a typo shows up in development rather than as a broken image.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from appleconnect.buttons import ButtonParamsError, ButtonSpec

from .embedding import button_markup

__all__ = ["ButtonParamsError", "install", "sign_in_with_apple"]


def sign_in_with_apple(
    *,
    service_url: str = "",
    next: str = "/",
    kind: str = "center",
    color: str = "black",
    type: str = "sign-in",
    width: int = 240,
    height: int = 44,
    border: bool = False,
    border_radius: int = 8,
    locale: str = "en_US",
    logo_size: str | None = None,
    element_id: str = "",
) -> Markup:
    """The button as HTML. ``service_url`` empty means the page is served by the service."""
    if not next.startswith("/") or next.startswith("//"):
        raise ValueError("next must be a path on the service, such as /account.")
    fields: dict[str, Any] = {
        "kind": kind,
        "width": height if kind == "logo" else width,
        "height": height,
        "color": color,
        "border": border,
        "border_radius": border_radius,
        "type": type,
        "locale": locale,
    }
    if kind == "left":
        fields["logo_size"] = logo_size
    spec = ButtonSpec(**fields)
    return button_markup(service_url, spec, next_path=next, element_id=element_id)


def install(environment: Any, *, service_url: str = "") -> None:
    """Make ``sign_in_with_apple(...)`` available in every template of ``environment``."""

    def macro(**kwargs: Any) -> Markup:
        kwargs.setdefault("service_url", service_url)
        return sign_in_with_apple(**kwargs)

    environment.globals["sign_in_with_apple"] = macro
