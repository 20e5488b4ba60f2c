"""Apple's button images, rendered by the shared ``appleconnect.buttons`` module."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("appleconnect.buttons")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "url",
    [
        "/appleid/button",
        "/appleid/button?height=64&width=375&color=white&border=true&type=continue&scale=2",
        "/appleid/button/left?logo-size=small&label-position=20&width=200",
        "/appleid/button/logo?size=40&color=white&border_radius=0",
    ],
)
async def test_button_is_a_png(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "url",
    [
        "/appleid/button?height=29",
        "/appleid/button?width=376",
        "/appleid/button?color=red",
        "/appleid/button?scale=7",
        "/appleid/button?locale=xx_XX",
        "/appleid/button?bogus=1",
        "/appleid/button/logo?width=140",
        "/appleid/button/left?logo_size=small",
    ],
)
async def test_invalid_parameter_is_404(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 404
    assert response.content == b""
