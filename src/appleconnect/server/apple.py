"""The service's one door to Apple: the client library, one client per configured client id.

Per-process caches live here (Apple's keys, the minted client secrets); they are re-derivable,
so several processes may each hold their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from appleconnect import (
    AppleKeys,
    AsyncAppleClient,
    ClientSecret,
    IdentityToken,
    Notification,
    TokenResponse,
    aparse_notification,
)

from .settings import Settings

__all__ = ["AppleGateway", "TokenResult"]


@dataclass(frozen=True)
class TokenResult:
    """Apple's token response as the service passes it on (``api_response``)."""

    access_token: str
    refresh_token: str | None
    id_token: str | None
    raw: Mapping[str, Any]


class AppleGateway:
    """Exchange, refresh, revoke and verify, for every client id in the allow-list.

    While Apple settings are missing (:attr:`missing` names them) it has no clients, and the
    service answers ``not_configured`` instead of calling it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        private_key_pem: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.missing = settings.apple_missing(private_key_pem=private_key_pem)
        self.audiences = settings.audiences
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0))
        self.keys = AppleKeys(
            base_url=settings.apple_base_url,
            async_http_client=self._http,
            refetch_interval=settings.keys_refetch_interval,
            failure_backoff=settings.keys_failure_backoff,
        )
        self._clients: dict[str, AsyncAppleClient] = {}
        for client_id in () if self.missing else self.audiences:
            secret: ClientSecret | str
            if settings.client_secret:
                secret = settings.client_secret.get()
            else:
                secret = ClientSecret(settings.team_id, settings.key_id, client_id, private_key_pem)
            self._clients[client_id] = AsyncAppleClient(
                client_id,
                secret,
                extra_audiences=self.audiences,
                base_url=settings.apple_base_url,
                http_client=self._http,
                keys=self.keys,
            )

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client to Apple (for the readiness check of the sandbox's emulator)."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    def client(self, client_id: str) -> AsyncAppleClient:
        return self._clients[client_id]

    def authorization_url(
        self, *, client_id: str, redirect_uri: str, state: str, nonce: str
    ) -> str:
        return self._clients[client_id].authorization_url(
            redirect_uri,
            scope=self.settings.scope,
            state=state,
            nonce=nonce,
            response_mode="form_post",
            # With ``code id_token`` the form_post carries the id_token, whose ``sub`` keys the
            # first-login name before the code exchange, which can fail
            # (docs/pitfalls.md#pitfall-name-only-once).
            response_type="code id_token",
        )

    async def exchange_code(
        self, *, client_id: str, code: str, redirect_uri: str | None
    ) -> TokenResult:
        response = await self._clients[client_id].exchange_code(code, redirect_uri=redirect_uri)
        return _result(response)

    async def refresh(self, *, client_id: str, refresh_token: str) -> TokenResult:
        return _result(await self._clients[client_id].refresh(refresh_token))

    async def revoke(self, *, client_id: str, refresh_token: str) -> None:
        await self._clients[client_id].revoke(refresh_token, token_type_hint="refresh_token")  # noqa: S106

    async def verify(
        self, id_token: str, *, nonce: str | None, access_token: str | None = None
    ) -> IdentityToken:
        # Every client shares one key cache and one audience allow-list, so any client will do.
        client = self._clients[self.settings.client_id]
        return await client.verify_identity_token(id_token, nonce=nonce, access_token=access_token)

    async def parse_notification(self, body: bytes) -> Notification:
        return await aparse_notification(
            body, self.keys, audiences=self.audiences, leeway=self.settings.leeway_seconds
        )


def _result(response: TokenResponse) -> TokenResult:
    return TokenResult(
        access_token=response.access_token,
        refresh_token=response.refresh_token,
        id_token=response.id_token,
        raw=dict(response.raw),
    )
