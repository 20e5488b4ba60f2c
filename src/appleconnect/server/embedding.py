"""The ways to put the service's Sign in with Apple button on other pages: a script tag for
``/embed.js``, a plain link with the button image, and the Jinja2 helper's call
(:mod:`appleconnect.server.jinja`). :class:`SnippetOptions` is what the admin panel's snippet
generator asks (docs/embedding.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlencode

from markupsafe import Markup, escape

from appleconnect import buttons

__all__ = [
    "BUTTON_FIELDS",
    "BUTTON_PATHS",
    "SnippetOptions",
    "button_markup",
    "snippets",
]

BUTTON_PATHS: dict[buttons.Kind, str] = {
    "center": "/buttons/apple",
    "left": "/buttons/apple/left",
    "logo": "/buttons/apple/logo",
}
_MODES: dict[str, buttons.Kind] = {
    "center-align": "center",
    "left-align": "left",
    "logo-only": "logo",
}
BUTTON_FIELDS = ("mode", "color", "type", "width", "height", "border", "border_radius", "locale")


Flow = Literal["popup", "redirect"]


@dataclass(frozen=True)
class SnippetOptions:
    """What the admin panel's snippet generator asks; each field maps to a ``data-`` attribute."""

    mode: str = "center-align"
    color: str = "black"
    type: str = "sign-in"
    width: int = 240
    height: int = 44
    border: bool = False
    border_radius: int = 8
    locale: str = "en_US"
    flow: Flow = "popup"
    next: str = "/"
    error: str = ""

    @property
    def kind(self) -> buttons.Kind:
        return _MODES[self.mode]

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> SnippetOptions:
        """Options from the generator's form; invalid values fall back to the defaults."""
        default = cls()
        values: dict[str, Any] = {}
        try:
            mode = query.get("mode", default.mode)
            if mode not in _MODES:
                raise ValueError("mode")
            values["mode"] = mode
            for name in ("color", "type", "locale"):
                values[name] = query.get(name, getattr(default, name))
            for name in ("width", "height", "border_radius"):
                raw = query.get(name, str(getattr(default, name)))
                if not raw.isdigit() or len(raw) > 4:
                    raise ValueError(name)
                values[name] = int(raw)
            values["border"] = query.get("border") in ("true", "on")
            flow = query.get("flow", default.flow)
            if flow not in ("popup", "redirect"):
                raise ValueError("flow")
            values["flow"] = flow
            next_path = query.get("next", "/")[:200] or "/"
            if not next_path.startswith("/") or next_path.startswith("//"):
                raise ValueError("next")
            values["next"] = next_path
            options = replace(default, **values)
            options.spec()
        except (ValueError, buttons.ButtonParamsError) as exc:
            return replace(default, error=f"Invalid value ({exc}); showing the defaults.")
        return options

    def spec(self) -> buttons.ButtonSpec:
        # The logo button is square: its width is its height.
        return buttons.ButtonSpec(
            kind=self.kind,
            width=self.height if self.kind == "logo" else self.width,
            height=self.height,
            color=self.color,  # type: ignore[arg-type]
            border=self.border,
            border_radius=self.border_radius,
            type=self.type,  # type: ignore[arg-type]
            locale=self.locale,
        )

    def image_url(self, service_url: str) -> str:
        query = self.spec().to_query()
        return (
            service_url.rstrip("/")
            + BUTTON_PATHS[self.kind]
            + ("?" + urlencode(query) if query else "")
        )

    def query(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "color": self.color,
            "type": self.type,
            "width": str(self.width),
            "height": str(self.height),
            "border": "true" if self.border else "false",
            "border_radius": str(self.border_radius),
            "locale": self.locale,
            "flow": self.flow,
            "next": self.next,
        }


def button_markup(
    service_url: str, spec: buttons.ButtonSpec, *, next_path: str = "/", element_id: str = ""
) -> Markup:
    """A link to the service's sign-in with the button image; its accessible name is the label.

    Works without JavaScript. Used by the Jinja2 helper and the snippet generator.
    """
    base = service_url.rstrip("/")
    query = spec.to_query()
    src = base + BUTTON_PATHS[spec.kind] + ("?" + urlencode(query) if query else "")
    href = f"{base}/auth/apple/start?" + urlencode({"next": next_path})
    name = buttons.label(spec.type, spec.locale)
    ident = f' id="{escape(element_id)}"' if element_id else ""
    # Every interpolated value is escaped above or is an integer.
    return Markup(  # noqa: S704
        f'<a class="appleconnect-button"{ident} href="{escape(href)}" '
        f'style="display:inline-block;line-height:0;border-radius:{spec.border_radius}px">'
        f'<img src="{escape(src)}" width="{spec.width}" height="{spec.height}" '
        f'alt="{escape(name)}"></a>'
    )


def snippets(service_url: str, options: SnippetOptions) -> dict[str, str]:
    """The three ways to place the button, as text to copy."""
    base = service_url.rstrip("/")
    attrs = {
        "data-mode": options.mode,
        "data-color": options.color,
        "data-type": options.type,
        "data-border": "true" if options.border else "false",
        "data-border-radius": str(options.border_radius),
        "data-locale": options.locale,
        "data-flow": options.flow,
    }
    if options.kind == "logo":
        attrs["data-size"] = str(options.height)
    else:
        attrs["data-width"] = str(options.width)
        attrs["data-height"] = str(options.height)
    if options.flow == "redirect":
        attrs["data-next"] = options.next
    script = (
        f'<script src="{escape(base)}/embed.js" async\n'
        + "".join(f'        {k}="{escape(v)}"\n' for k, v in attrs.items())
        + "></script>"
    )
    link = str(button_markup(base, options.spec(), next_path=options.next))
    jinja_args = ", ".join(
        f"{k}={v!r}"
        for k, v in (
            ("kind", options.kind),
            ("color", options.color),
            ("type", options.type),
            ("width", options.width if options.kind != "logo" else options.height),
            ("height", options.height),
            ("border", options.border),
            ("border_radius", options.border_radius),
            ("locale", options.locale),
            ("next", options.next),
        )
    )
    jinja = "{{ sign_in_with_apple(" + jinja_args + ") }}"
    return {"script": script, "link": link, "jinja": jinja}
