"""Tests of the Sign in with Apple button renderer (appleconnect.buttons).

Golden SVGs live in tests/golden/buttons/. After an intended change to the drawing, regenerate
them with ``UPDATE_GOLDEN=1 python -m pytest tests/test_buttons.py`` and review the diff.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from appleconnect import buttons
from appleconnect.buttons import (
    BUTTON_TYPES,
    LOCALES,
    ButtonParamsError,
    ButtonSpec,
    label,
    parse_button_query,
    parse_button_query_string,
    render_png,
    render_svg,
)

GOLDEN_DIR = Path(__file__).parent / "golden" / "buttons"
SVG_NS = "{http://www.w3.org/2000/svg}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

GOLDEN_CASES: dict[str, tuple[buttons.Kind, dict[str, str]]] = {
    "center-default": ("center", {}),
    "center-white-border-continue-scale2": (
        "center",
        {
            "color": "white",
            "border": "true",
            "type": "continue",
            "width": "200",
            "height": "44",
            "scale": "2",
        },
    ),
    "center-sign-up-de_DE-square": (
        "center",
        {
            "type": "sign-up",
            "locale": "de_DE",
            "border_radius": "0",
            "width": "375",
            "height": "64",
        },
    ),
    "center-rtl-ar_SA": ("center", {"locale": "ar_SA", "width": "250", "height": "44"}),
    "center-ja_JP-pill": ("center", {"locale": "ja_JP", "border_radius": "50"}),
    "left-positions-large": (
        "left",
        {
            "width": "300",
            "height": "50",
            "logo-size": "large",
            "logo-position": "20",
            "label-position": "100",
        },
    ),
    "left-default-fr_FR": ("left", {"locale": "fr_FR"}),
    "left-rtl-iw_IL-small": ("left", {"locale": "iw_IL", "width": "250", "logo-size": "small"}),
    "logo-default": ("logo", {}),
    "logo-white-border-64-scale3": (
        "logo",
        {"size": "64", "color": "white", "border": "true", "border_radius": "0", "scale": "3"},
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_svg_matches_golden_file(name: str) -> None:
    kind, query = GOLDEN_CASES[name]
    svg = render_svg(parse_button_query(kind, query))
    path = GOLDEN_DIR / f"{name}.svg"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(svg, encoding="utf-8", newline="\n")
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert svg == path.read_text(encoding="utf-8")


def test_every_golden_file_has_a_case() -> None:
    assert {path.stem for path in GOLDEN_DIR.glob("*.svg")} == set(GOLDEN_CASES)


# Defaults.


def test_center_defaults_follow_apples_table() -> None:
    spec = parse_button_query("center", {})
    assert spec == ButtonSpec(
        kind="center",
        width=140,
        height=30,
        color="black",
        border=False,
        border_radius=15,
        type="sign-in",
        scale=1,
        locale="en_US",
        logo_size=None,
        logo_position=0,
        label_position=0,
    )
    assert (spec.pixel_width, spec.pixel_height) == (140, 30)
    assert spec.label == "Sign in with Apple"


def test_left_defaults() -> None:
    spec = parse_button_query("left", {})
    assert (spec.kind, spec.width, spec.height, spec.border_radius) == ("left", 140, 30, 15)
    assert (spec.logo_size, spec.logo_position, spec.label_position) == (None, 0, 0)


def test_logo_defaults_to_a_30_point_square() -> None:
    spec = parse_button_query("logo", {})
    assert (spec.kind, spec.width, spec.height, spec.color, spec.border) == (
        "logo",
        30,
        30,
        "black",
        False,
    )
    assert (spec.border_radius, spec.scale) == (15, 1)


def test_values_are_applied() -> None:
    spec = parse_button_query(
        "left",
        {
            "height": "44",
            "width": "300",
            "color": "white",
            "border": "true",
            "type": "sign-up",
            "border_radius": "8",
            "scale": "3",
            "locale": "iw_IL",
            "label-position": "150",
            "logo-position": "40",
            "logo-size": "small",
        },
    )
    assert spec == ButtonSpec(
        kind="left",
        width=300,
        height=44,
        color="white",
        border=True,
        border_radius=8,
        type="sign-up",
        scale=3,
        locale="iw_IL",
        logo_size="small",
        logo_position=40,
        label_position=150,
    )
    assert (spec.pixel_width, spec.pixel_height) == (900, 132)


def test_logo_size_sets_width_and_height() -> None:
    spec = parse_button_query("logo", {"size": "50", "scale": "2"})
    assert (spec.width, spec.height, spec.pixel_width, spec.pixel_height) == (50, 50, 100, 100)


# Bounds: every integer parameter at min, max, min-1 and max+1.

BOUNDS: list[tuple[buttons.Kind, str, int, int, dict[str, str]]] = [
    ("center", "height", 30, 64, {}),
    ("center", "width", 130, 375, {}),
    ("center", "border_radius", 0, 50, {}),
    ("center", "scale", 1, 6, {}),
    ("left", "height", 30, 64, {}),
    ("left", "width", 130, 375, {}),
    ("left", "border_radius", 0, 50, {}),
    ("left", "scale", 1, 6, {}),
    ("left", "label-position", 0, 182, {"width": "375"}),
    ("left", "logo-position", 0, 182, {"width": "375"}),
    ("logo", "size", 30, 64, {}),
    ("logo", "border_radius", 0, 50, {}),
    ("logo", "scale", 1, 6, {}),
]


def _field(spec: ButtonSpec, param: str) -> Any:
    return getattr(spec, "width" if param == "size" else param.replace("-", "_"))


@pytest.mark.parametrize(("kind", "param", "low", "high", "extra"), BOUNDS)
def test_integer_bounds_are_inclusive(
    kind: buttons.Kind, param: str, low: int, high: int, extra: dict[str, str]
) -> None:
    for value in (low, high):
        spec = parse_button_query(kind, {**extra, param: str(value)})
        assert _field(spec, param) == value


@pytest.mark.parametrize(("kind", "param", "low", "high", "extra"), BOUNDS)
def test_integer_just_outside_the_bounds_is_refused(
    kind: buttons.Kind, param: str, low: int, high: int, extra: dict[str, str]
) -> None:
    for value in (low - 1, high + 1):
        if value < 0:
            value = -1  # Not a plain decimal integer either; still refused, naming the param.
        with pytest.raises(ButtonParamsError) as caught:
            parse_button_query(kind, {**extra, param: str(value)})
        assert caught.value.param == param
        assert param in str(caught.value)
        assert f"{low} to {high}" in str(caught.value)


@pytest.mark.parametrize("param", ["label-position", "logo-position"])
def test_positions_are_at_most_half_the_width(param: str) -> None:
    assert _field(parse_button_query("left", {"width": "140", param: "70"}), param) == 70
    with pytest.raises(ButtonParamsError, match="half the width") as caught:
        parse_button_query("left", {"width": "140", param: "71"})
    assert caught.value.param == param
    # Half of an odd width: 131 / 2 = 65.5, so 65 is the largest position.
    parse_button_query("left", {"width": "131", param: "65"})
    with pytest.raises(ButtonParamsError):
        parse_button_query("left", {"width": "131", param: "66"})


# Unknown, repeated and malformed parameters.


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("center", "logo-size"),
        ("center", "label-position"),
        ("center", "size"),
        ("center", "Width"),
        ("center", "foo"),
        ("center", ""),
        ("center", "borderRadius"),
        ("center", "border-radius"),
        ("left", "logo_size"),
        ("left", "logo_position"),
        ("left", "label_position"),
        ("left", "size"),
        ("logo", "width"),
        ("logo", "height"),
        ("logo", "type"),
        ("logo", "locale"),
        ("logo", "logo-size"),
        ("logo", "label-position"),
        ("logo", "logo-position"),
    ],
)
def test_unknown_parameters_are_refused(kind: buttons.Kind, name: str) -> None:
    value = {"logo_size": "small", "logo-size": "small", "type": "continue"}.get(name, "30")
    with pytest.raises(ButtonParamsError, match="unknown parameter") as caught:
        parse_button_query(kind, {name: value})
    assert caught.value.param == name


def test_unknown_parameter_names_are_quoted_safely_and_briefly() -> None:
    with pytest.raises(ButtonParamsError) as caught:
        parse_button_query("center", {"<script>" + "x" * 100: "1"})
    message = str(caught.value)
    assert "x" * 50 not in message
    assert caught.value.param is None


class MultiDict(Mapping[str, str]):
    """The part of Starlette's QueryParams that the parser relies on."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._last = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._last[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def getlist(self, key: str) -> list[str]:
        return [value for name, value in self._items if name == key]


def test_repeated_parameter_in_a_multidict_is_refused() -> None:
    query = MultiDict([("width", "200"), ("color", "white"), ("width", "200")])
    with pytest.raises(ButtonParamsError, match="once") as caught:
        parse_button_query("center", query)
    assert caught.value.param == "width"
    single = MultiDict([("width", "200"), ("color", "white")])
    assert parse_button_query("center", single).width == 200


def test_repeated_parameter_from_parse_qs_is_refused() -> None:
    with pytest.raises(ButtonParamsError) as caught:
        parse_button_query("center", {"color": ["black", "white"]})  # type: ignore[dict-item]
    assert caught.value.param == "color"
    assert parse_button_query("center", {"color": ["white"]}).color == "white"  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "raw",
    [
        "30.5",
        "30.0",
        "+30",
        " 30",
        "30 ",
        "0x1e",
        "1e2",
        "",
        "030",
        "-0",
        "3_0",
        "\u0663\u0660",  # Arabic-Indic digits: str.isdigit() says yes, Apple says no.
        "\uff13\uff10",  # Full-width digits.
        "9" * 40,
    ],
)
def test_malformed_integers_are_refused(raw: str) -> None:
    with pytest.raises(ButtonParamsError) as caught:
        parse_button_query("center", {"height": raw})
    assert caught.value.param == "height"


@pytest.mark.parametrize("raw", ["True", "FALSE", "1", "0", "yes", "", "true ", "on"])
def test_malformed_booleans_are_refused(raw: str) -> None:
    with pytest.raises(ButtonParamsError, match="true or false") as caught:
        parse_button_query("logo", {"border": raw})
    assert caught.value.param == "border"


def test_booleans() -> None:
    assert parse_button_query("center", {"border": "true"}).border is True
    assert parse_button_query("center", {"border": "false"}).border is False


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("color", "Black"),
        ("color", "BLACK"),
        ("color", "red"),
        ("color", ""),
        ("type", "sign in"),
        ("type", "signin"),
        ("type", "Sign-In"),
        ("type", "sign_up"),
        ("locale", "en-US"),
        ("locale", "en_us"),
        ("locale", "en"),
        ("locale", "he_IL"),
        ("locale", "vi_VN"),
        ("locale", "nb_NO"),
    ],
)
def test_unknown_choices_are_refused(param: str, raw: str) -> None:
    with pytest.raises(ButtonParamsError, match="must be one of") as caught:
        parse_button_query("center", {param: raw})
    assert caught.value.param == param


@pytest.mark.parametrize("raw", ["tiny", "Small", "", "huge"])
def test_unknown_logo_sizes_are_refused(raw: str) -> None:
    with pytest.raises(ButtonParamsError, match="small, medium, large") as caught:
        parse_button_query("left", {"logo-size": raw})
    assert caught.value.param == "logo-size"


def test_sign_up_is_accepted_like_apple_js() -> None:
    spec = parse_button_query("center", {"type": "sign-up"})
    assert spec.label == "Sign up with Apple"


def test_oversized_values_and_queries_are_refused() -> None:
    with pytest.raises(ButtonParamsError, match="too long") as caught:
        parse_button_query("center", {"locale": "en_US" * 10})
    assert caught.value.param == "locale"
    many = {f"p{i}": "1" for i in range(50)}
    with pytest.raises(ButtonParamsError, match="too many"):
        parse_button_query("center", many)
    with pytest.raises(ButtonParamsError):
        parse_button_query_string("center", "a=" + "1" * 5000)


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind") as caught:
        parse_button_query("right", {})  # type: ignore[arg-type]
    assert not isinstance(caught.value, ButtonParamsError)


def test_query_string_parsing() -> None:
    assert parse_button_query_string("center", "") == parse_button_query("center", {})
    spec = parse_button_query_string("left", "width=300&logo-size=large&locale=fr_CA")
    assert (spec.width, spec.logo_size, spec.locale) == (300, "large", "fr_CA")
    bad_queries: list[tuple[str, str | None]] = [
        ("width=200&width=200", "width"),
        ("width", None),  # No "=": the query string itself is malformed.
        ("height=%2B30", "height"),
        ("height=+30", "height"),
        ("logo_size=small", "logo_size"),
    ]
    for bad, param in bad_queries:
        kind: buttons.Kind = "left"
        with pytest.raises(ButtonParamsError) as caught:
            parse_button_query_string(kind, bad)
        assert caught.value.param == param, bad
    for malformed in ["locale=%ff", "&&", "=1"]:
        with pytest.raises(ButtonParamsError):
            parse_button_query_string("center", malformed)


# ButtonSpec validates itself, for callers that build one directly.


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"width": 129}, "width"),
        ({"height": 65}, "height"),
        ({"width": True}, "width"),
        ({"scale": 1.5}, "scale"),
        ({"border": "true"}, "border"),
        ({"color": "red"}, "color"),
        ({"locale": "xx_XX"}, "locale"),
        ({"logo_size": "small"}, "logo-size"),
        ({"label_position": 10}, "label-position"),
        ({"kind": "logo", "width": 40, "height": 30}, "size"),
        ({"kind": "logo", "width": 140, "height": 140}, "size"),
        ({"kind": "left", "width": 140, "logo_position": 71}, "logo-position"),
        ({"kind": "middle"}, "kind"),
    ],
)
def test_button_spec_refuses_invalid_fields(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ButtonParamsError) as caught:
        ButtonSpec(**fields)
    assert caught.value.param == param


query_values = st.fixed_dictionaries(
    {"width": st.integers(260, 375).map(str)},
    optional={
        "height": st.integers(30, 64).map(str),
        "color": st.sampled_from(["black", "white"]),
        "border": st.sampled_from(["true", "false"]),
        "type": st.sampled_from(BUTTON_TYPES),
        "border_radius": st.integers(0, 50).map(str),
        "scale": st.integers(1, 6).map(str),
        "locale": st.sampled_from(LOCALES),
        "label-position": st.integers(0, 130).map(str),
        "logo-position": st.integers(0, 130).map(str),
        "logo-size": st.sampled_from(["small", "medium", "large"]),
    },
)


@settings(max_examples=60, deadline=None)
@given(query=query_values)
def test_to_query_round_trips(query: dict[str, str]) -> None:
    spec = parse_button_query("left", query)
    assert parse_button_query("left", spec.to_query()) == spec
    center_query = {
        k: v for k, v in query.items() if k not in {"label-position", "logo-position", "logo-size"}
    }
    center = parse_button_query("center", center_query)
    assert parse_button_query("center", center.to_query()) == center


def test_to_query_of_defaults_is_empty_and_logo_uses_size() -> None:
    assert parse_button_query("center", {}).to_query() == {}
    assert parse_button_query("logo", {"size": "40", "scale": "2"}).to_query() == {
        "size": "40",
        "scale": "2",
    }


# Locales and labels.


def test_locales_are_apples_37() -> None:
    assert len(LOCALES) == 37
    assert len(set(LOCALES)) == 37
    assert list(LOCALES) == sorted(LOCALES)
    for apple_spelling in ("iw_IL", "vi_VI", "no_NO", "zh_HK", "es_MX", "fr_CA", "en_GB"):
        assert apple_spelling in LOCALES
    for modern_spelling in ("he_IL", "vi_VN", "nb_NO"):
        assert modern_spelling not in LOCALES
    assert BUTTON_TYPES == ("sign-in", "continue", "sign-up")


def test_english_labels() -> None:
    for locale in ("en_US", "en_GB"):
        assert label("sign-in", locale) == "Sign in with Apple"
        assert label("continue", locale) == "Continue with Apple"
        assert label("sign-up", locale) == "Sign up with Apple"


@pytest.mark.parametrize("locale", LOCALES)
def test_every_locale_has_three_distinct_translated_labels(locale: str) -> None:
    labels = [label(button_type, locale) for button_type in BUTTON_TYPES]
    assert all(text.strip() == text and text for text in labels)
    assert len(set(labels)) == 3
    for text in labels:
        assert "Apple" in text  # The brand stays in Latin letters in every locale.
    if not locale.startswith("en_"):
        english = {label(button_type, "en_US") for button_type in BUTTON_TYPES}
        assert not english & set(labels)


def test_some_translations() -> None:
    assert label("sign-in", "de_DE") == "Mit Apple anmelden"
    assert label("continue", "fr_FR") == "Continuer avec Apple"
    assert label("sign-in", "ja_JP") == "Appleでサインイン"
    assert label("sign-in", "zh_CN") == "通过 Apple 登录"
    assert label("sign-up", "pt_PT") != label("sign-up", "pt_BR")


def test_label_refuses_unknown_values() -> None:
    with pytest.raises(ButtonParamsError) as caught:
        label("sign-in", "en")
    assert caught.value.param == "locale"
    with pytest.raises(ButtonParamsError) as caught:
        label("log-in", "en_US")
    assert caught.value.param == "type"


# SVG.


def _parse_svg(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted XML.


@pytest.mark.parametrize(
    ("kind", "query", "size", "view_box"),
    [
        ("center", {}, ("140", "30"), "0 0 140 30"),
        ("center", {"width": "375", "height": "64", "scale": "6"}, ("2250", "384"), "0 0 375 64"),
        ("left", {"width": "130", "scale": "2"}, ("260", "60"), "0 0 130 30"),
        ("logo", {"size": "64", "scale": "3"}, ("192", "192"), "0 0 64 64"),
    ],
)
def test_svg_size_and_view_box(
    kind: buttons.Kind, query: dict[str, str], size: tuple[str, str], view_box: str
) -> None:
    root = _parse_svg(render_svg(parse_button_query(kind, query)))
    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height")) == size
    assert root.get("viewBox") == view_box
    assert root.get("role") == "img"


@pytest.mark.parametrize("locale", LOCALES)
def test_svg_names_the_button_in_every_locale(locale: str) -> None:
    for button_type in BUTTON_TYPES:
        for kind in ("center", "left"):
            spec = parse_button_query(kind, {"type": button_type, "locale": locale})
            root = _parse_svg(render_svg(spec))
            assert root.get("aria-label") == label(button_type, locale)
            title = root.find(f"{SVG_NS}title")
            assert title is not None
            assert title.text == label(button_type, locale)
            text = root.find(f"{SVG_NS}text")
            assert text is not None
            assert text.text == label(button_type, locale)
            assert text.get(XML_LANG) is not None
            rtl = locale in ("ar_SA", "iw_IL")
            assert (text.get("direction") == "rtl") is rtl


def test_svg_lang_uses_bcp47() -> None:
    for locale, lang in [("iw_IL", "he-IL"), ("vi_VI", "vi-VN"), ("no_NO", "nb-NO")]:
        text = _parse_svg(render_svg(parse_button_query("center", {"locale": locale}))).find(
            f"{SVG_NS}text"
        )
        assert text is not None
        assert text.get(XML_LANG) == lang


def test_svg_logo_only_has_no_text_but_is_named() -> None:
    root = _parse_svg(render_svg(parse_button_query("logo", {})))
    assert root.find(f"{SVG_NS}text") is None
    assert root.get("aria-label") == "Sign in with Apple"
    assert root.find(f"{SVG_NS}path") is not None


def test_svg_colours_and_border() -> None:
    black = _parse_svg(render_svg(parse_button_query("center", {})))
    rects = black.findall(f"{SVG_NS}rect")
    assert len(rects) == 1
    assert rects[0].get("fill") == "#000000"
    assert black.find(f"{SVG_NS}path").get("fill") == "#ffffff"  # type: ignore[union-attr]
    assert black.find(f"{SVG_NS}text").get("fill") == "#ffffff"  # type: ignore[union-attr]

    white = _parse_svg(render_svg(parse_button_query("center", {"color": "white"})))
    assert [rect.get("fill") for rect in white.findall(f"{SVG_NS}rect")] == ["#ffffff"]
    assert white.find(f"{SVG_NS}path").get("fill") == "#000000"  # type: ignore[union-attr]

    bordered = _parse_svg(
        render_svg(parse_button_query("center", {"color": "white", "border": "true"}))
    )
    background, border = bordered.findall(f"{SVG_NS}rect")
    assert background.get("fill") == "#ffffff"
    assert (border.get("fill"), border.get("stroke"), border.get("stroke-width")) == (
        "none",
        "#000000",
        "1",
    )
    black_bordered = _parse_svg(render_svg(parse_button_query("logo", {"border": "true"})))
    assert black_bordered.findall(f"{SVG_NS}rect")[1].get("stroke") == "#ffffff"


def test_svg_radius_is_capped_at_half_the_height() -> None:
    root = _parse_svg(render_svg(parse_button_query("center", {"border_radius": "50"})))
    assert root.find(f"{SVG_NS}rect").get("rx") == "15"  # type: ignore[union-attr]
    root = _parse_svg(render_svg(parse_button_query("center", {"border_radius": "0"})))
    assert root.find(f"{SVG_NS}rect").get("rx") == "0"  # type: ignore[union-attr]


def test_svg_is_deterministic_and_self_contained() -> None:
    spec = parse_button_query("left", {"locale": "ko_KR", "logo-size": "large", "width": "200"})
    svg = render_svg(spec)
    assert svg == render_svg(spec)
    lowered = svg.lower()
    for forbidden in ("href", "url(", "<image", "<script", "@import", "<style"):
        assert forbidden not in lowered
    assert lowered.count("http") == 1  # The namespace only.
    assert "-apple-system, 'Helvetica Neue', Helvetica, Arial, sans-serif" in svg


def test_escape() -> None:
    assert (
        buttons._escape("""<a href="x">&'</a>""") == "&lt;a href=&quot;x&quot;&gt;&amp;'&lt;/a&gt;"
    )


# Layout and glyph.


def test_glyph_stays_inside_its_box() -> None:
    xs: list[float] = []
    ys: list[float] = []
    for start, segments in buttons._glyph_subpaths(0.0, 0.0, 100.0):
        points = buttons._flatten(start, segments, 20)
        xs += [x for x, _ in points]
        ys += [y for _, y in points]
    width, height = buttons._GLYPH_BOX
    assert min(xs) >= 0
    assert max(xs) <= width
    assert min(ys) >= 0
    assert max(ys) <= height
    assert max(ys) - min(ys) > 0.95 * height


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", [130, 140, 375])
def test_center_layout_keeps_the_margins(locale: str, width: int) -> None:
    for button_type in BUTTON_TYPES:
        spec = ButtonSpec(width=width, height=64, type=button_type, locale=locale)
        layout = buttons._layout(spec)
        margin = width / 10 - 1e-9
        left = min(layout.logo_x, layout.label_x)
        right = max(layout.logo_x + 0.8 * layout.logo_height, layout.label_x + layout.label_width)
        assert left >= margin
        assert right <= width - margin
        assert layout.font_size <= 0.43 * 64 + 1e-9
        assert layout.logo_height == pytest.approx(layout.font_size)
        assert abs((left + right) / 2 - width / 2) < 1e-6  # Centred.
        if locale in ("ar_SA", "iw_IL"):
            assert layout.logo_x > layout.label_x
        else:
            assert layout.logo_x < layout.label_x


def test_center_font_is_43_percent_of_height_when_it_fits() -> None:
    layout = buttons._layout(ButtonSpec(width=375, height=50))
    assert layout.font_size == pytest.approx(21.5)
    assert layout.baseline == pytest.approx(25 + 0.35 * 21.5)


def test_left_layout_uses_positions_and_adjusts_them() -> None:
    spec = ButtonSpec(kind="left", width=375, height=50, logo_position=20, label_position=100)
    layout = buttons._layout(spec)
    assert layout.logo_x == 37.5  # Pushed right to the 1/10 margin.
    assert layout.label_x == 100
    assert layout.label_anchor == "start"

    # A label position inside the logo is pushed past the logo and the gap.
    spec = ButtonSpec(kind="left", width=300, height=50, logo_position=60, label_position=0)
    layout = buttons._layout(spec)
    assert layout.logo_x == 60
    assert layout.label_x == pytest.approx(60 + 0.8 * layout.logo_height + 0.3 * layout.font_size)

    # A label that would cross the right margin moves left, then shrinks.
    spec = ButtonSpec(kind="left", width=140, logo_position=70, label_position=70)
    layout = buttons._layout(spec)
    assert layout.logo_x >= 14
    assert layout.label_x + layout.label_width <= 140 - 14 + 1e-9
    assert layout.logo_x + 0.8 * layout.logo_height < layout.label_x


@pytest.mark.parametrize(("size", "ratio"), [("small", 0.32), ("medium", 0.43), ("large", 0.55)])
def test_logo_sizes(size: buttons.LogoSize, ratio: float) -> None:
    layout = buttons._layout(ButtonSpec(kind="left", width=375, height=60, logo_size=size))
    assert layout.logo_height == pytest.approx(ratio * 60)


# PNG.


def _pixels(image: Image.Image) -> list[Any]:
    """Every pixel, as getdata() gave them before Pillow deprecated it."""
    width, height = image.size
    return [image.getpixel((x, y)) for y in range(height) for x in range(width)]


def _png(kind: buttons.Kind, query: dict[str, str], **kwargs: Any) -> Image.Image:
    data = render_png(parse_button_query(kind, query), **kwargs)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("kind", "query", "size"),
    [
        ("center", {}, (140, 30)),
        ("center", {"width": "200", "height": "44", "scale": "2"}, (400, 88)),
        ("center", {"width": "375", "height": "64", "scale": "6"}, (2250, 384)),
        ("left", {"width": "130", "height": "64", "scale": "3"}, (390, 192)),
        ("logo", {"size": "64", "scale": "2"}, (128, 128)),
        ("logo", {}, (30, 30)),
    ],
)
def test_png_dimensions(kind: buttons.Kind, query: dict[str, str], size: tuple[int, int]) -> None:
    image = _png(kind, query)
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    assert image.size == size


def test_black_png_has_transparent_corners_and_a_black_background() -> None:
    image = _png("center", {"scale": "2"})
    width, height = image.size
    for corner in [(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)]:
        assert image.getpixel(corner)[3] == 0  # type: ignore[index]
    assert image.getpixel((width // 2, 3)) == (0, 0, 0, 255)
    assert image.getpixel((6, height // 2)) != (0, 0, 0, 0)  # Inside the rounded end.
    # The logo and label are white on black.
    assert any(pixel[:3] == (255, 255, 255) for pixel in _pixels(image))


def test_square_corners_are_opaque() -> None:
    image = _png("center", {"border_radius": "0"})
    assert image.getpixel((0, 0)) == (0, 0, 0, 255)


def test_white_png_with_and_without_border() -> None:
    plain = _png("center", {"color": "white", "scale": "2"})
    width, _ = plain.size
    assert plain.getpixel((width // 2, 0)) == (255, 255, 255, 255)
    assert plain.getpixel((width // 2, 4)) == (255, 255, 255, 255)
    bordered = _png("center", {"color": "white", "border": "true", "scale": "2"})
    assert bordered.getpixel((width // 2, 0)) == (0, 0, 0, 255)
    assert bordered.getpixel((width // 2, 4)) == (255, 255, 255, 255)
    assert any(pixel[:3] == (0, 0, 0) for pixel in _pixels(plain))


def test_png_logo_is_drawn_in_the_middle() -> None:
    image = _png("logo", {"size": "64", "border_radius": "0"})
    centre = image.crop((22, 22, 42, 42))
    assert any(pixel == (255, 255, 255, 255) for pixel in _pixels(centre))
    edge = image.crop((0, 0, 64, 8))
    assert all(pixel == (0, 0, 0, 255) for pixel in _pixels(edge))


def test_png_label_is_drawn_with_the_builtin_font_when_no_font_is_found() -> None:
    for paths in ([], ["/nonexistent/font.ttf"]):
        image = _png("center", {"width": "200"}, font_paths=paths)
        assert image.size == (200, 30)
        right_half = image.crop((100, 5, 180, 25))
        assert any(pixel[:3] == (255, 255, 255) for pixel in _pixels(right_half))


@pytest.mark.parametrize("locale", ["ar_SA", "iw_IL", "th_TH", "zh_TW", "el_GR", "ru_RU"])
def test_png_renders_in_other_scripts(locale: str) -> None:
    for kind in ("center", "left"):
        image = _png(kind, {"locale": locale, "type": "continue"})
        assert image.size == (140, 30)


def test_png_is_deterministic() -> None:
    spec = parse_button_query("left", {"logo-size": "large", "scale": "2"})
    assert render_png(spec) == render_png(spec)


def test_importing_the_module_does_not_import_pillow() -> None:
    code = "import sys, appleconnect.buttons; sys.exit('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert result.returncode == 0, result.stderr
