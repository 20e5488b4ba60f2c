"""The Sign in with Apple button renderer, shared by the emulator and the service.

Apple serves its button as PNG images from ``https://appleid.cdn-apple.com``
(docs/apple-protocol.md#buttons-and-js). This module takes the same query parameters, with the same
ranges and defaults, and draws the button itself, as SVG (pure Python) or PNG (Pillow, imported
only by :func:`render_png`)::

    spec = parse_button_query("center", {"type": "continue", "color": "white", "border": "true"})
    svg = render_svg(spec)          # str
    png = render_png(spec)          # bytes

The three kinds and their endpoints:

=========  ===========================  ============================
kind       Apple                        the service
=========  ===========================  ============================
center     ``/appleid/button``          ``/buttons/apple``
left       ``/appleid/button/left``     ``/buttons/apple/left``
logo       ``/appleid/button/logo``     ``/buttons/apple/logo``
=========  ===========================  ============================

Any invalid value, unknown parameter name (``logo_size`` for ``logo-size`` included), repeated
parameter or oversized query raises :class:`ButtonParamsError`; Apple answers such requests with
``404`` and so should callers. ``type=sign-up`` is accepted in addition to Apple's documented
``sign-in`` and ``continue``: Sign in with Apple JS offers it (``data-type``;
docs/apple-protocol.md#buttons-and-js).

Proportions, in points, before ``scale`` (HIG-like values; Apple publishes ratios, not a grid):

- Label: system font stack, weight 500 (medium), size 43% of the button height. The baseline sits
  0.35 em below the vertical centre, which centres the capital letters.
- Logo (the apple glyph, drawn by this project from its own Bézier curves): as tall as the label's
  font size, 0.8 times as wide as tall, centred vertically; a gap of 0.3 em separates it from the
  label. Left-aligned buttons choose the logo height with ``logo-size``: small 32%, medium 43%
  (default) and large 55% of the button height. Logo-only buttons use 45% of the size.
- Margins: at least 1/10 of the button width on the left and right. When logo and label do not
  fit between the margins, the label's font size and the logo shrink together (center) or the label
  moves left and then shrinks (left).
- Left-aligned: the logo starts at ``logo-position`` and the label at ``label-position``, both in
  points from the left edge; each is pushed right to keep the margin and the logo-label gap, and
  pulled back left when the label would cross the right margin.
- Corners: ``border_radius`` points, capped at half the height (a pill). The border, when asked
  for, is 1 point wide, inside the edge, in the content colour (black on a white button, white on
  a black one).
- Right-to-left locales (``ar_SA``, ``iw_IL``): the label is set with ``direction="rtl"``, and on
  center-aligned buttons the logo goes to the right of the label, following the reading order.

The SVG's label width is estimated from Helvetica's advance widths (an SVG has no font metrics
until a browser draws it); the PNG renderer lays the button out with the width that its font
really gives.
"""

from __future__ import annotations

import io
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from PIL import ImageFont

__all__ = [
    "BUTTON_TYPES",
    "COLORS",
    "KINDS",
    "LOCALES",
    "LOGO_SIZES",
    "RTL_LOCALES",
    "ButtonParamsError",
    "ButtonSpec",
    "label",
    "parse_button_query",
    "parse_button_query_string",
    "render_png",
    "render_svg",
]

Kind = Literal["center", "left", "logo"]
Color = Literal["black", "white"]
ButtonType = Literal["sign-in", "continue", "sign-up"]
LogoSize = Literal["small", "medium", "large"]

KINDS: tuple[Kind, ...] = get_args(Kind)
COLORS: tuple[Color, ...] = get_args(Color)
BUTTON_TYPES: tuple[ButtonType, ...] = get_args(ButtonType)
"""``sign-in`` and ``continue`` are Apple's image endpoint values; ``sign-up`` is from Apple JS."""
LOGO_SIZES: tuple[LogoSize, ...] = get_args(LogoSize)

LOCALES: tuple[str, ...] = (
    "ar_SA", "ca_ES", "cs_CZ", "da_DK", "de_DE", "el_GR", "en_GB", "en_US", "es_ES", "es_MX",
    "fi_FI", "fr_CA", "fr_FR", "hr_HR", "hu_HU", "id_ID", "it_IT", "iw_IL", "ja_JP", "ko_KR",
    "ms_MY", "nl_NL", "no_NO", "pl_PL", "pt_BR", "pt_PT", "ro_RO", "ru_RU", "sk_SK", "sv_SE",
    "th_TH", "tr_TR", "uk_UA", "vi_VI", "zh_CN", "zh_HK", "zh_TW",
)  # fmt: skip
"""Apple's 37 button locales, spelled as Apple spells them (``iw_IL``, ``vi_VI``, ``no_NO``)."""

RTL_LOCALES: frozenset[str] = frozenset({"ar_SA", "iw_IL"})

# Apple's locale codes predate some BCP 47 codes; ``xml:lang`` needs the modern ones.
_BCP47_OVERRIDES = {"iw_IL": "he-IL", "vi_VI": "vi-VN", "no_NO": "nb-NO"}

# (sign-in, continue, sign-up) for each locale, as Apple's localized buttons word them.
_LABELS: dict[str, tuple[str, str, str]] = {
    "ar_SA": (
        "تسجيل الدخول باستخدام Apple",
        "المتابعة باستخدام Apple",
        "الاشتراك باستخدام Apple",
    ),
    "ca_ES": ("Iniciar sessió amb Apple", "Continuar amb Apple", "Registrar-se amb Apple"),
    "cs_CZ": ("Přihlásit se přes Apple", "Pokračovat přes Apple", "Zaregistrovat se přes Apple"),
    "da_DK": ("Log ind med Apple", "Fortsæt med Apple", "Tilmeld dig med Apple"),
    "de_DE": ("Mit Apple anmelden", "Mit Apple fortfahren", "Mit Apple registrieren"),
    "el_GR": ("Σύνδεση με την Apple", "Συνέχεια με την Apple", "Εγγραφή με την Apple"),
    "en_GB": ("Sign in with Apple", "Continue with Apple", "Sign up with Apple"),
    "en_US": ("Sign in with Apple", "Continue with Apple", "Sign up with Apple"),
    "es_ES": ("Iniciar sesión con Apple", "Continuar con Apple", "Registrarse con Apple"),
    "es_MX": ("Iniciar sesión con Apple", "Continuar con Apple", "Registrarse con Apple"),
    "fi_FI": ("Kirjaudu sisään Applella", "Jatka Applella", "Rekisteröidy Applella"),
    "fr_CA": ("Se connecter avec Apple", "Continuer avec Apple", "S’inscrire avec Apple"),  # noqa: RUF001
    "fr_FR": ("Se connecter avec Apple", "Continuer avec Apple", "S’inscrire avec Apple"),  # noqa: RUF001
    "hr_HR": ("Prijava putem Applea", "Nastavi putem Applea", "Registracija putem Applea"),
    "hu_HU": ("Bejelentkezés az Apple-lel", "Folytatás az Apple-lel", "Regisztráció az Apple-lel"),
    "id_ID": ("Masuk dengan Apple", "Lanjutkan dengan Apple", "Daftar dengan Apple"),
    "it_IT": ("Accedi con Apple", "Continua con Apple", "Iscriviti con Apple"),
    "iw_IL": ("התחברות עם Apple", "המשך עם Apple", "הרשמה עם Apple"),
    "ja_JP": ("Appleでサインイン", "Appleで続ける", "Appleでサインアップ"),
    "ko_KR": ("Apple로 로그인", "Apple로 계속하기", "Apple로 가입하기"),
    "ms_MY": ("Daftar masuk dengan Apple", "Teruskan dengan Apple", "Daftar dengan Apple"),
    "nl_NL": ("Log in met Apple", "Ga door met Apple", "Registreer met Apple"),
    "no_NO": ("Logg på med Apple", "Fortsett med Apple", "Registrer deg med Apple"),
    "pl_PL": ("Zaloguj się przez Apple", "Kontynuuj przez Apple", "Zarejestruj się przez Apple"),
    "pt_BR": ("Iniciar sessão com a Apple", "Continuar com a Apple", "Registrar-se com a Apple"),
    "pt_PT": ("Iniciar sessão com a Apple", "Continuar com a Apple", "Registar-se com a Apple"),
    "ro_RO": ("Conectare cu Apple", "Continuă cu Apple", "Înregistrare cu Apple"),
    "ru_RU": ("Вход с Apple", "Продолжить с Apple", "Регистрация с Apple"),  # noqa: RUF001
    "sk_SK": ("Prihlásiť sa cez Apple", "Pokračovať cez Apple", "Zaregistrovať sa cez Apple"),
    "sv_SE": ("Logga in med Apple", "Fortsätt med Apple", "Registrera dig med Apple"),
    "th_TH": ("ลงชื่อเข้าด้วย Apple", "ดำเนินการต่อด้วย Apple", "ลงทะเบียนด้วย Apple"),
    "tr_TR": ("Apple ile Giriş Yap", "Apple ile Devam Et", "Apple ile Kaydol"),
    "uk_UA": ("Увійти з Apple", "Продовжити з Apple", "Зареєструватися з Apple"),
    "vi_VI": ("Đăng nhập bằng Apple", "Tiếp tục với Apple", "Đăng ký bằng Apple"),
    "zh_CN": ("通过 Apple 登录", "通过 Apple 继续", "通过 Apple 注册"),
    "zh_HK": ("使用 Apple 登入", "使用 Apple 繼續", "使用 Apple 註冊"),
    "zh_TW": ("使用 Apple 登入", "使用 Apple 繼續", "使用 Apple 註冊"),
}

# Ranges from Apple's tables (docs/buttons.md#parameters), in points.
_HEIGHT = (30, 64)
_WIDTH = (130, 375)
_SIZE = (30, 64)
_BORDER_RADIUS = (0, 50)
_SCALE = (1, 6)
_POSITION = (0, 182)

_DEFAULT_HEIGHT = 30
_DEFAULT_WIDTH = 140
_DEFAULT_SIZE = 30
_DEFAULT_BORDER_RADIUS = 15

_COMMON_PARAMS = frozenset({"color", "border", "border_radius", "scale"})
_ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "center": _COMMON_PARAMS | {"height", "width", "type", "locale"},
    "left": _COMMON_PARAMS
    | {"height", "width", "type", "locale", "label-position", "logo-position", "logo-size"},
    "logo": _COMMON_PARAMS | {"size"},
}

# Size limits on what a caller may send: no valid value is longer than 8 characters.
_MAX_PARAMS = 16
_MAX_NAME_LENGTH = 32
_MAX_VALUE_LENGTH = 16
_MAX_QUERY_STRING_LENGTH = 1024

_PLAIN_INT = re.compile(r"0|[1-9][0-9]{0,8}")

# Proportions; see the module docstring.
_FONT_RATIO = 0.43
_BASELINE_EM = 0.35
_LOGO_ASPECT = 0.8
_GAP_EM = 0.3
_MARGIN_RATIO = 0.1
_LOGO_ONLY_RATIO = 0.45
_LOGO_SIZE_RATIO: dict[LogoSize, float] = {"small": 0.32, "medium": 0.43, "large": 0.55}
_BORDER_WIDTH = 1.0

_FONT_FAMILY = "-apple-system, 'Helvetica Neue', Helvetica, Arial, sans-serif"
_FONT_WEIGHT = 500


class ButtonParamsError(ValueError):
    """Raised when a button parameter is unknown, repeated, malformed or out of range.

    ``param`` names the offending query parameter (``None`` when the query as a whole is bad).
    Apple's image endpoints answer these requests with ``404``.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _shown(value: str) -> str:
    """A short, printable quotation of a caller's value for an error message."""
    if len(value) > _MAX_VALUE_LENGTH:
        value = value[:_MAX_VALUE_LENGTH] + "..."
    return ascii(value)


def _check_int(name: str, value: object, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ButtonParamsError(
            f"{name} must be an integer from {low} to {high}, got {value!r}", param=name
        )
    return value


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ButtonParamsError(
            f"{name} must be one of {', '.join(allowed)}, got {value!r}", param=name
        )
    return value


@dataclass(frozen=True)
class ButtonSpec:
    """A validated button: every field is within Apple's ranges once the object exists.

    ``width``, ``height``, ``border_radius`` and the positions are in points; the image is
    ``width * scale`` by ``height * scale`` pixels. For the ``logo`` kind, ``width`` and ``height``
    are both Apple's ``size``. ``logo_size``, ``logo_position`` and ``label_position`` apply to the
    ``left`` kind only (``None``, ``0`` and ``0`` otherwise); ``logo_size=None`` draws a medium
    logo. ``type`` and ``locale`` of a logo-only button choose its accessible name.
    """

    kind: Kind = "center"
    width: int = _DEFAULT_WIDTH
    height: int = _DEFAULT_HEIGHT
    color: Color = "black"
    border: bool = False
    border_radius: int = _DEFAULT_BORDER_RADIUS
    type: ButtonType = "sign-in"
    scale: int = 1
    locale: str = "en_US"
    logo_size: LogoSize | None = None
    logo_position: int = 0
    label_position: int = 0

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, KINDS)
        if self.kind == "logo":
            _check_int("size", self.width, _SIZE)
            _check_int("size", self.height, _SIZE)
            if self.width != self.height:
                raise ButtonParamsError(
                    f"size: a logo button is square, got {self.width}x{self.height}", param="size"
                )
        else:
            _check_int("width", self.width, _WIDTH)
            _check_int("height", self.height, _HEIGHT)
        _check_choice("color", self.color, COLORS)
        if not isinstance(self.border, bool):
            raise ButtonParamsError(
                f"border must be true or false, got {self.border!r}", param="border"
            )
        _check_int("border_radius", self.border_radius, _BORDER_RADIUS)
        _check_choice("type", self.type, BUTTON_TYPES)
        _check_int("scale", self.scale, _SCALE)
        _check_choice("locale", self.locale, LOCALES)
        if self.kind == "left":
            if self.logo_size is not None:
                _check_choice("logo-size", self.logo_size, LOGO_SIZES)
            for name, position in (
                ("logo-position", self.logo_position),
                ("label-position", self.label_position),
            ):
                _check_int(name, position, _POSITION)
                if 2 * position > self.width:
                    raise ButtonParamsError(
                        f"{name} must be at most half the width ({self.width // 2}), "
                        f"got {position}",
                        param=name,
                    )
        else:
            for name, value, default in (
                ("logo-size", self.logo_size, None),
                ("logo-position", self.logo_position, 0),
                ("label-position", self.label_position, 0),
            ):
                if value != default:
                    raise ButtonParamsError(
                        f"{name} applies to left-aligned buttons only", param=name
                    )

    @property
    def pixel_width(self) -> int:
        """Width of the image in pixels."""
        return self.width * self.scale

    @property
    def pixel_height(self) -> int:
        """Height of the image in pixels."""
        return self.height * self.scale

    @property
    def label(self) -> str:
        """The translated label, which is also the accessible name of the image."""
        return label(self.type, self.locale)

    def to_query(self) -> dict[str, str]:
        """The query parameters, in Apple's spelling, that give back this spec (defaults omitted).

        ``parse_button_query(spec.kind, spec.to_query()) == spec`` for every spec that Apple's
        parameters can express (a logo-only button's ``type`` and ``locale`` cannot).
        """
        query = self._size_query()
        if self.color != "black":
            query["color"] = self.color
        if self.border:
            query["border"] = "true"
        if self.border_radius != _DEFAULT_BORDER_RADIUS:
            query["border_radius"] = str(self.border_radius)
        if self.kind != "logo":
            if self.type != "sign-in":
                query["type"] = self.type
            if self.locale != "en_US":
                query["locale"] = self.locale
        if self.scale != 1:
            query["scale"] = str(self.scale)
        if self.kind == "left":
            query.update(self._left_query())
        return query

    def _size_query(self) -> dict[str, str]:
        if self.kind == "logo":
            return {"size": str(self.width)} if self.width != _DEFAULT_SIZE else {}
        query: dict[str, str] = {}
        if self.height != _DEFAULT_HEIGHT:
            query["height"] = str(self.height)
        if self.width != _DEFAULT_WIDTH:
            query["width"] = str(self.width)
        return query

    def _left_query(self) -> dict[str, str]:
        """The parameters only a left-aligned button has."""
        query: dict[str, str] = {}
        if self.label_position:
            query["label-position"] = str(self.label_position)
        if self.logo_position:
            query["logo-position"] = str(self.logo_position)
        if self.logo_size is not None:
            query["logo-size"] = self.logo_size
        return query


def label(type: str, locale: str) -> str:
    """The button's label for ``type`` (sign-in, continue, sign-up) in Apple's ``locale``."""
    _check_choice("type", type, BUTTON_TYPES)
    _check_choice("locale", locale, LOCALES)
    return _LABELS[locale][BUTTON_TYPES.index(cast(ButtonType, type))]


# Query parsing.


def _single_value(query: Mapping[str, str], name: str) -> str:
    """The one value of ``name``; multi-dicts (Starlette, Werkzeug) and parse_qs lists count."""
    getlist = getattr(query, "getlist", None)
    values: object = getlist(name) if callable(getlist) else query[name]
    if isinstance(values, list | tuple):
        if len(values) != 1:
            raise ButtonParamsError(f"{name} must be given once", param=name)
        values = values[0]
    if not isinstance(values, str):
        raise ButtonParamsError(f"{name} must be a string, got {type(values).__name__}", param=name)
    if len(values) > _MAX_VALUE_LENGTH:
        raise ButtonParamsError(f"{name} is too long ({_shown(values)})", param=name)
    return values


def _parse_int(name: str, raw: str, bounds: tuple[int, int]) -> int:
    # Plain decimal only: Apple's int32 parameters have one spelling, and a canonical form keeps
    # caches keyed on the query from holding many copies of one image.
    if _PLAIN_INT.fullmatch(raw) is None:
        low, high = bounds
        raise ButtonParamsError(
            f"{name} must be a plain decimal integer from {low} to {high}, got {_shown(raw)}",
            param=name,
        )
    return _check_int(name, int(raw), bounds)


def _parse_bool(name: str, raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ButtonParamsError(f"{name} must be true or false, got {_shown(raw)}", param=name)
    return raw == "true"


def _parse_choice(name: str, raw: str, allowed: Sequence[str]) -> str:
    if raw not in allowed:
        raise ButtonParamsError(
            f"{name} must be one of {', '.join(allowed)}, got {_shown(raw)}", param=name
        )
    return raw


def _int_in(bounds: tuple[int, int]) -> Callable[[str, str], object]:
    return lambda name, raw: _parse_int(name, raw, bounds)


def _one_of(allowed: Sequence[str]) -> Callable[[str, str], object]:
    return lambda name, raw: _parse_choice(name, raw, allowed)


# Apple's parameter name -> (the ButtonSpec fields it sets, how its value is read).
_PARAM_PARSERS: dict[str, tuple[tuple[str, ...], Callable[[str, str], object]]] = {
    "height": (("height",), _int_in(_HEIGHT)),
    "width": (("width",), _int_in(_WIDTH)),
    "size": (("width", "height"), _int_in(_SIZE)),
    "color": (("color",), _one_of(COLORS)),
    "border": (("border",), _parse_bool),
    "border_radius": (("border_radius",), _int_in(_BORDER_RADIUS)),
    "type": (("type",), _one_of(BUTTON_TYPES)),
    "scale": (("scale",), _int_in(_SCALE)),
    "locale": (("locale",), _one_of(LOCALES)),
    "label-position": (("label_position",), _int_in(_POSITION)),
    "logo-position": (("logo_position",), _int_in(_POSITION)),
    "logo-size": (("logo_size",), _one_of(LOGO_SIZES)),
}


def parse_button_query(kind: Kind, query: Mapping[str, str]) -> ButtonSpec:
    """Validate Apple's query parameters for a button of ``kind`` and return its spec.

    Raises :class:`ButtonParamsError` (answer ``404``) for any unknown parameter name, repeated
    parameter, malformed or out-of-range value. ``query`` may be a plain dict, a Starlette
    ``QueryParams`` or Werkzeug ``MultiDict`` (repeats are detected through ``getlist``), or the
    dict of lists that :func:`urllib.parse.parse_qs` returns.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if len(query) > _MAX_PARAMS:
        raise ButtonParamsError(f"too many parameters ({len(query)})")
    allowed = _ALLOWED_PARAMS[kind]
    values: dict[str, str] = {}
    for name in query:
        if not isinstance(name, str) or name not in allowed:
            shown = _shown(name) if isinstance(name, str) else repr(name)
            raise ButtonParamsError(
                f"unknown parameter {shown}; {kind} buttons take {', '.join(sorted(allowed))}",
                param=name if isinstance(name, str) and len(name) <= _MAX_NAME_LENGTH else None,
            )
        values[name] = _single_value(query, name)

    fields: dict[str, object] = {"kind": kind}
    for name, raw in values.items():
        targets, parse = _PARAM_PARSERS[name]
        value = parse(name, raw)
        for target in targets:
            fields[target] = value
    if kind == "logo" and "size" not in values:
        fields["width"] = fields["height"] = _DEFAULT_SIZE
    # Every value was checked above; ButtonSpec checks the rules that tie values together.
    return ButtonSpec(**fields)  # type: ignore[arg-type]


def parse_button_query_string(kind: Kind, query_string: str) -> ButtonSpec:
    """Like :func:`parse_button_query`, from a raw query string (``"width=200&color=white"``)."""
    if len(query_string) > _MAX_QUERY_STRING_LENGTH:
        raise ButtonParamsError("the query string is too long")
    try:
        pairs = parse_qsl(
            query_string,
            keep_blank_values=True,
            strict_parsing=bool(query_string),
            errors="strict",
            max_num_fields=_MAX_PARAMS,
        )
    except ValueError as exc:  # Also UnicodeDecodeError, a subclass.
        raise ButtonParamsError(f"malformed query string: {exc}") from None
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return parse_button_query(kind, cast(Mapping[str, str], grouped))


# Layout, shared by the SVG and PNG renderers. Every length is in points.


def _char_em(char: str) -> float:
    if char in _HELVETICA_EM:
        return _HELVETICA_EM[char]
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0.0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 1.0
    for first, last, em in _SCRIPT_EM:
        if first <= char <= last:
            return em
    base = unicodedata.normalize("NFD", char)[0]
    return _HELVETICA_EM.get(base, 0.6)


def _text_em(text: str) -> float:
    """Estimated advance width of ``text`` in em, for a medium-weight sans-serif."""
    return 1.04 * sum(_char_em(char) for char in text)


# Average advance widths of scripts without a Latin base letter: Hebrew, Arabic, Thai.
_SCRIPT_EM = (("\u0590", "\u05ff", 0.55), ("\u0600", "\u06ff", 0.45), ("\u0e00", "\u0e7f", 0.55))

_HELVETICA_EM: dict[str, float] = {
    char: width / 1000
    for char, width in zip(
        " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
        "abcdefghijklmnopqrstuvwxyz{|}~\u2019",
        (
            278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
            556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
            1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
            667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
            333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
            556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 222,
        ),
        strict=True,
    )
}  # fmt: skip


@dataclass(frozen=True)
class _Layout:
    radius: float
    logo_x: float  # Left edge of the glyph's box.
    logo_y: float  # Top edge of the glyph's box.
    logo_height: float
    font_size: float
    label_x: float  # Left edge of the label's estimated box.
    label_width: float  # Estimated width of the label.
    baseline: float
    label_anchor: Literal["start", "middle"]
    rtl: bool

    @property
    def anchor_x(self) -> float:
        """Where the label's text anchor sits: its left edge (start) or its middle."""
        if self.label_anchor == "start":
            return self.label_x
        return self.label_x + self.label_width / 2


def _layout(spec: ButtonSpec, text_em: float | None = None) -> _Layout:
    """Where everything goes; ``text_em`` is the label's measured width in em, if known."""
    width, height = float(spec.width), float(spec.height)
    radius = min(float(spec.border_radius), width / 2, height / 2)
    rtl = spec.locale in RTL_LOCALES
    if spec.kind == "logo":
        logo_height = _LOGO_ONLY_RATIO * height
        return _Layout(
            radius=radius,
            logo_x=(width - _LOGO_ASPECT * logo_height) / 2,
            logo_y=(height - logo_height) / 2,
            logo_height=logo_height,
            font_size=0.0,
            label_x=0.0,
            label_width=0.0,
            baseline=0.0,
            label_anchor="middle",
            rtl=rtl,
        )

    if text_em is None:
        text_em = _text_em(spec.label)
    margin = _MARGIN_RATIO * width
    font_size = _FONT_RATIO * height
    if spec.kind == "center":
        logo_height = font_size
        content = font_size * (_LOGO_ASPECT + _GAP_EM + text_em)
        if content > width - 2 * margin:
            font_size *= (width - 2 * margin) / content
            logo_height = font_size
            content = width - 2 * margin
        start = (width - content) / 2
        logo_width = _LOGO_ASPECT * logo_height
        label_width = text_em * font_size
        if rtl:
            label_x = start
            logo_x = start + label_width + _GAP_EM * font_size
        else:
            logo_x = start
            label_x = start + logo_width + _GAP_EM * font_size
        anchor: Literal["start", "middle"] = "middle"
    else:
        logo_height = _LOGO_SIZE_RATIO[spec.logo_size or "medium"] * height
        logo_width = _LOGO_ASPECT * logo_height
        gap = _GAP_EM * font_size
        right = width - margin
        logo_x = max(float(spec.logo_position), margin)
        label_x = max(float(spec.label_position), logo_x + logo_width + gap)
        # Keep the right margin: move the label left, then the logo, then shrink the label.
        label_x = min(label_x, right - text_em * font_size)
        if label_x < logo_x + logo_width + gap:
            logo_x = max(margin, label_x - gap - logo_width)
            label_x = logo_x + logo_width + gap
        if label_x + text_em * font_size > right:
            font_size = (right - label_x) / text_em
        label_width = text_em * font_size
        anchor = "middle" if rtl else "start"
    return _Layout(
        radius=radius,
        logo_x=logo_x,
        logo_y=(height - logo_height) / 2,
        logo_height=logo_height,
        font_size=font_size,
        label_x=label_x,
        label_width=label_width,
        baseline=height / 2 + _BASELINE_EM * font_size,
        label_anchor=anchor,
        rtl=rtl,
    )


# The apple glyph: this project's own drawing, cubic Bézier curves in an 80 x 100 box (y down).
# Each subpath is a start point and (control 1, control 2, end) triples; the first is the leaf.
_Point = tuple[float, float]
_Segment = tuple[_Point, _Point, _Point]
_GLYPH_BOX = (80.0, 100.0)
_GLYPH: tuple[tuple[_Point, tuple[_Segment, ...]], ...] = (
    (
        (40.0, 23.0),
        (
            ((39.0, 13.0), (46.0, 3.0), (57.0, 0.0)),
            ((58.0, 10.0), (51.0, 21.0), (40.0, 23.0)),
        ),
    ),
    (
        (40.0, 29.0),
        (
            ((35.0, 29.0), (30.0, 25.0), (23.0, 25.0)),
            ((11.0, 25.0), (0.0, 35.0), (0.0, 52.0)),
            ((0.0, 68.0), (8.0, 86.0), (17.0, 95.0)),
            ((21.0, 99.0), (25.0, 100.0), (29.0, 99.0)),
            ((34.0, 98.0), (36.0, 96.0), (40.0, 96.0)),
            ((44.0, 96.0), (47.0, 98.0), (52.0, 99.0)),
            ((56.0, 100.0), (60.0, 99.0), (64.0, 95.0)),
            ((69.0, 90.0), (75.0, 81.0), (80.0, 72.0)),
            ((71.0, 68.0), (65.0, 60.0), (65.0, 51.0)),
            ((65.0, 43.0), (70.0, 37.0), (77.0, 33.0)),
            ((72.0, 27.0), (65.0, 25.0), (58.0, 25.0)),
            ((51.0, 25.0), (45.0, 29.0), (40.0, 29.0)),
        ),
    ),
)


def _glyph_subpaths(x: float, y: float, height: float) -> Iterator[tuple[_Point, list[_Segment]]]:
    """The glyph's subpaths scaled to ``height`` with the top-left of its box at ``(x, y)``."""
    factor = height / _GLYPH_BOX[1]

    def place(point: _Point) -> _Point:
        return (x + point[0] * factor, y + point[1] * factor)

    for start, segments in _GLYPH:
        yield place(start), [(place(c1), place(c2), place(end)) for c1, c2, end in segments]


def _flatten(start: _Point, segments: Sequence[_Segment], steps: int) -> list[_Point]:
    """A polygon through ``steps`` points of each cubic segment."""
    points = [start]
    current = start
    for c1, c2, end in segments:
        for i in range(1, steps + 1):
            t = i / steps
            u = 1 - t
            points.append(
                (
                    u**3 * current[0]
                    + 3 * u * u * t * c1[0]
                    + 3 * u * t * t * c2[0]
                    + t**3 * end[0],
                    u**3 * current[1]
                    + 3 * u * u * t * c1[1]
                    + 3 * u * t * t * c2[1]
                    + t**3 * end[1],
                )
            )
        current = end
    return points


# SVG.


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _escape(text: str) -> str:
    """Escape ``text`` for XML character data and double-quoted attributes."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _colors(spec: ButtonSpec) -> tuple[str, str]:
    """(fill, content) colours."""
    return ("#000000", "#ffffff") if spec.color == "black" else ("#ffffff", "#000000")


def _lang(locale: str) -> str:
    return _BCP47_OVERRIDES.get(locale, locale.replace("_", "-"))


def render_svg(spec: ButtonSpec) -> str:
    """The button as a standalone SVG document: deterministic text, no external references."""
    layout = _layout(spec)
    fill, content = _colors(spec)
    width, height = _num(spec.width), _num(spec.height)
    name = _escape(spec.label)
    radius = _num(layout.radius)
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{spec.pixel_width}" '
        f'height="{spec.pixel_height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{name}">',
        f"<title>{name}</title>",
        f'<rect width="{width}" height="{height}" rx="{radius}" ry="{radius}" fill="{fill}"/>',
    ]
    if spec.border:
        inset = _BORDER_WIDTH / 2
        inner = _num(max(layout.radius - inset, 0.0))
        lines.append(
            f'<rect x="{_num(inset)}" y="{_num(inset)}" width="{_num(spec.width - 2 * inset)}" '
            f'height="{_num(spec.height - 2 * inset)}" rx="{inner}" ry="{inner}" fill="none" '
            f'stroke="{content}" stroke-width="{_num(_BORDER_WIDTH)}"/>'
        )
    commands = []
    for start, segments in _glyph_subpaths(layout.logo_x, layout.logo_y, layout.logo_height):
        commands.append(f"M{_num(start[0])} {_num(start[1])}")
        commands.extend(
            "C" + " ".join(f"{_num(px)} {_num(py)}" for px, py in segment) for segment in segments
        )
        commands.append("Z")
    lines.append(f'<path fill="{content}" d="{"".join(commands)}"/>')
    if spec.kind != "logo":
        direction = ' direction="rtl" unicode-bidi="embed"' if layout.rtl else ""
        lines.append(
            f'<text x="{_num(layout.anchor_x)}" y="{_num(layout.baseline)}" fill="{content}" '
            f'font-family="{_escape(_FONT_FAMILY)}" font-size="{_num(layout.font_size)}" '
            f'font-weight="{_FONT_WEIGHT}" text-anchor="{layout.label_anchor}" '
            f'xml:lang="{_lang(spec.locale)}"{direction}>{name}</text>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


# PNG.

_FONT_DIRS = (
    "/usr/share/fonts/truetype",
    "/usr/share/fonts/opentype",
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
_LATIN_FONTS = (
    "liberation2/LiberationSans-Regular.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "noto/NotoSans-Regular.ttf",
    "dejavu/DejaVuSans.ttf",
    "TTF/DejaVuSans.ttf",
    "DejaVuSans.ttf",
    "Arial.ttf",
    "arial.ttf",
)
# Scripts that the Latin fonts above may lack; DejaVu Sans covers Greek, Cyrillic, Hebrew, Arabic.
_SCRIPT_FONTS: dict[str, tuple[str, ...]] = {
    "ar_SA": ("noto/NotoSansArabic-Regular.ttf", "dejavu/DejaVuSans.ttf", "TTF/DejaVuSans.ttf"),
    "iw_IL": ("noto/NotoSansHebrew-Regular.ttf", "dejavu/DejaVuSans.ttf", "TTF/DejaVuSans.ttf"),
    "th_TH": (
        "noto/NotoSansThai-Regular.ttf",
        "tlwg/Garuda.ttf",
        "tlwg/Garuda.otf",
        "TTF/Garuda.ttf",
    ),
}
_CJK_FONTS = (
    "noto/NotoSansCJK-Regular.ttc",
    "noto-cjk/NotoSansCJK-Regular.ttc",
    "google-noto-cjk/NotoSansCJK-Regular.ttc",
    "opentype/noto/NotoSansCJK-Regular.ttc",
    "wqy-microhei/wqy-microhei.ttc",
    "Hiragino Sans GB.ttc",
)
for _cjk in ("ja_JP", "ko_KR", "zh_CN", "zh_HK", "zh_TW"):
    _SCRIPT_FONTS[_cjk] = _CJK_FONTS
del _cjk

_MAX_SUPERSAMPLED_SIDE = 4096


def _font_candidates(locale: str) -> Iterator[str]:
    for name in (*_SCRIPT_FONTS.get(locale, ()), *_LATIN_FONTS):
        for directory in _FONT_DIRS:
            yield os.path.join(directory, name)


def _load_font(
    size: float, locale: str, font_paths: Sequence[str] | None
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    candidates = _font_candidates(locale) if font_paths is None else iter(font_paths)
    for path in candidates:
        if os.path.isfile(path):
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def _png_layout(
    spec: ButtonSpec, factor: float, direction: str | None, font_paths: Sequence[str] | None
) -> tuple[_Layout, ImageFont.FreeTypeFont | ImageFont.ImageFont | None]:
    """The layout and the label's font at ``factor`` pixels per point (no font for a logo).

    The layout is made again with the label's real width in this font, so that the group of
    logo and label is centred and the margins hold whatever the estimate said.
    """
    layout = _layout(spec)
    if spec.kind == "logo":
        return layout, None
    nominal = layout.font_size * factor
    font = _load_font(nominal, spec.locale, font_paths)
    measured = font.getlength(spec.label, direction=direction)
    layout = _layout(spec, text_em=measured / nominal if measured > 0 else None)
    if not math.isclose(layout.font_size, nominal / factor, rel_tol=1e-6):
        font = _load_font(layout.font_size * factor, spec.locale, font_paths)
    return layout, font


def render_png(spec: ButtonSpec, *, font_paths: Sequence[str] | None = None) -> bytes:
    """The button as a PNG of ``width * scale`` by ``height * scale`` pixels (RGBA).

    The label uses the first TrueType font found among common system paths (Liberation Sans,
    Noto, DejaVu Sans; Noto CJK or Thai fonts for those locales), or ``font_paths`` when given,
    else Pillow's built-in font. Nothing is downloaded. Shapes are drawn supersampled and reduced,
    which anti-aliases their edges.
    """
    from PIL import Image, ImageChops, ImageDraw, features

    size = (spec.pixel_width, spec.pixel_height)
    supersample = max(1, min(4, _MAX_SUPERSAMPLED_SIDE // max(size)))
    big = (size[0] * supersample, size[1] * supersample)
    factor = spec.scale * supersample  # Pixels per point on the supersampled canvas.

    def px(value: float) -> float:
        return value * factor

    def mask() -> tuple[Image.Image, ImageDraw.ImageDraw]:
        image = Image.new("L", big, 0)
        return image, ImageDraw.Draw(image)

    direction = "rtl" if spec.locale in RTL_LOCALES and features.check("raqm") else None
    layout, font = _png_layout(spec, factor, direction, font_paths)

    box = (0.0, 0.0, big[0] - 1.0, big[1] - 1.0)
    background, draw = mask()
    draw.rounded_rectangle(box, radius=px(layout.radius), fill=255)

    border = None
    if spec.border:
        border, draw = mask()
        draw.rounded_rectangle(
            box,
            radius=px(layout.radius),
            outline=255,
            width=max(1, round(px(_BORDER_WIDTH))),
        )

    content, draw = mask()
    for start, segments in _glyph_subpaths(layout.logo_x, layout.logo_y, layout.logo_height):
        steps = max(4, math.ceil(px(layout.logo_height) / 8))
        polygon = [(px(x), px(y)) for x, y in _flatten(start, segments, steps)]
        draw.polygon(polygon, fill=255)
    if font is not None:
        draw.text(
            (px(layout.anchor_x), px(layout.baseline)),
            spec.label,
            fill=255,
            font=font,
            anchor="ls" if layout.label_anchor == "start" else "ms",
            direction=direction,
        )

    if supersample > 1:
        background = background.resize(size, Image.Resampling.BOX)
        content = content.resize(size, Image.Resampling.BOX)
        if border is not None:
            border = border.resize(size, Image.Resampling.BOX)

    # The alpha channel is the background's coverage exactly: corners outside the radius stay
    # fully transparent, and the logo, label and border only change the colour inside.
    foreground = content if border is None else ImageChops.lighter(content, border)
    fill_color, content_color = _colors(spec)
    image = Image.composite(
        Image.new("RGB", size, content_color), Image.new("RGB", size, fill_color), foreground
    )
    image.putalpha(background)
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()
