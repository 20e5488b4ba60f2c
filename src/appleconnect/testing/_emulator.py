"""``AppleEmulator``: the object the ``apple_emulator`` fixtures hand to a test.

It owns one emulator app (built once, so its keys are made once), runs it on a thread of its own
(in-process transports, and a loopback HTTP server on first use of :attr:`base_url`), and drives
it through its control API, so that every helper does what a client of the running emulator
could do. :meth:`reset` puts it back as it was when it was built, in well under a millisecond.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from appleconnect import (
    APPLE_ISSUER,
    AppleClient,
    AppleKeys,
    AsyncAppleClient,
    ClientSecret,
)
from appleconnect.emulator import checkpoint, create_emulator_app, restore_checkpoint

from ._records import Account, Credentials, EmulatorError, SentNotification, SignIn
from ._routes import NotificationRoutes
from ._runner import EmulatorRunner, InProcessTransport, bound_socket, loopback_url

IN_PROCESS_URL = "http://appleid.emulator.test"
"""The base URL of clients that reach the emulator in-process (no socket; the host is a label)."""
DEFAULT_ACCOUNT = "maria.ruiz@example.com"
DEFAULT_REDIRECT_URI = "http://localhost:8000/auth/apple/callback"


class AppleEmulator:
    """A running emulator of Apple's side for tests; see docs/testing.md.

    ``base_url`` reaches it over loopback HTTP (any client, any language, a browser);
    ``client()``/``async_client()`` return the library's clients configured for it, in-process
    by default. The helpers (``sign_in``, ``create_account``, ``revoke_consent``...) act like the
    user or Apple would, and send Apple's real signed notifications.
    """

    def __init__(self, *, issuer: str = APPLE_ISSUER) -> None:
        self._routes = NotificationRoutes()
        sock = bound_socket()
        self.app = create_emulator_app(
            issuer=issuer,
            base_url=loopback_url(sock),
            notification_transport=self._routes,
            notification_retry_delays=(0.05, 0.2),
        )
        self.state = self.app.state.emulator
        """The emulator's ``EmulatorState`` (docs/emulator.md), for what the helpers lack."""
        self._runner = EmulatorRunner(self.app, sock)
        team = self.state.default_team
        self.credentials = Credentials(
            team_id=team.team_id,
            key_id=team.key_id,
            private_key_pem=team.private_key_pem,
            services_id=team.services_id,
            app_id=team.app_id,
            redirect_uri=DEFAULT_REDIRECT_URI,
            issuer=self.state.issuer,
        )
        self._closers: list[Any] = []
        self._saved = checkpoint(self.state)

    # -- reaching it -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the emulator over loopback HTTP (started on first use)."""
        return self._runner.base_url

    def transport(self) -> httpx.BaseTransport:
        """A synchronous ``httpx`` transport to the emulator in-process (for ``httpx.Client``)."""
        return InProcessTransport(self._runner)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """An ``httpx`` transport to the emulator in-process, for ``httpx.AsyncClient``."""
        return httpx.ASGITransport(app=self.app)

    def now(self) -> float:
        """The emulator's clock (it moves with :meth:`advance_clock`)."""
        return float(self.state.now())

    def _secret(self, client_id: str | None) -> tuple[str, ClientSecret]:
        cid = client_id or self.credentials.services_id
        c = self.credentials
        return cid, ClientSecret(c.team_id, c.key_id, cid, c.private_key_pem, clock=self.now)

    def client(self, client_id: str | None = None, *, in_process: bool = True) -> AppleClient:
        """An :class:`~appleconnect.AppleClient` for ``client_id`` (default: the Services ID).

        It accepts identity tokens for the Services ID and the App ID and follows the
        emulator's clock (its key cache too: after :meth:`rotate_keys`, advance the clock by a
        minute or take a new client); it is closed after the test. ``in_process=False`` goes
        over loopback HTTP.
        """
        cid, secret = self._secret(client_id)
        http = httpx.Client(transport=self.transport() if in_process else None)
        base = IN_PROCESS_URL if in_process else self.base_url
        keys = AppleKeys(base_url=base, http_client=http, clock=self.now)
        apple = AppleClient(
            cid,
            secret,
            extra_audiences=self._audiences(cid),
            base_url=base,
            http_client=http,
            keys=keys,
            clock=self.now,
        )
        self._closers += [http.close, keys.close, apple.close]
        return apple

    def async_client(self, client_id: str | None = None) -> AsyncAppleClient:
        """The asynchronous twin of :meth:`client`, in-process (``httpx.ASGITransport``). It
        holds no socket; ``async with`` or ``aclose()`` as with any client."""
        cid, secret = self._secret(client_id)
        http = httpx.AsyncClient(transport=self.async_transport())
        return AsyncAppleClient(
            cid,
            secret,
            extra_audiences=self._audiences(cid),
            base_url=IN_PROCESS_URL,
            http_client=http,
            keys=AppleKeys(base_url=IN_PROCESS_URL, async_http_client=http, clock=self.now),
            clock=self.now,
        )

    def _audiences(self, client_id: str) -> list[str]:
        c = self.credentials
        return [a for a in (c.services_id, c.app_id) if a != client_id]

    # -- the control API -------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Straight to the app on its thread: an httpx.Client around it would add a tenth of a
        # millisecond to every helper, and sign_in is on the hot path of a test suite.
        request = httpx.Request(method, f"{IN_PROCESS_URL}/emulator{path}", json=body)
        status, _, content = self._runner.call(self._runner.send(request))
        data = json.loads(content) if content else None
        if status >= 400:
            if isinstance(data, dict) and "error" in data:
                raise EmulatorError(status, str(data.get("error_description", "")), data["error"])
            detail = data.get("detail", "") if isinstance(data, dict) else ""
            raise EmulatorError(status, str(detail))
        return data

    # -- the user at the consent page ------------------------------------------------------------

    def sign_in(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        share_email: bool = True,
        name: str | dict[str, str] | None = None,
        nonce: str | None = None,
        state: str | None = None,
        client_id: str | None = None,
        redirect_uri: str | None = None,
        scope: str = "name email",
        response_type: str = "code id_token",
        cancel: bool = False,
    ) -> SignIn:
        """The user signs in with ``account`` (an email or id) and presses Continue.

        Returns what Apple delivers to ``redirect_uri`` (default: the registered
        :attr:`Credentials.redirect_uri`): ``code``, ``id_token``, ``state`` and, on the first
        authorization for the team, ``user``. ``state`` defaults to a random value; ``name``
        (``"First Last"`` or Apple's ``{"firstName", "lastName"}``) is what the user typed;
        ``share_email=False`` hides the email behind a relay address.
        """
        cid = client_id or self.credentials.services_id
        if redirect_uri is None and cid == self.credentials.services_id:
            redirect_uri = self.credentials.redirect_uri
        params = {
            "client_id": cid,
            "redirect_uri": redirect_uri,
            "response_type": response_type,
            "response_mode": "form_post" if redirect_uri is not None else None,
            "scope": scope or None,
            "state": secrets.token_urlsafe(24) if state is None else state,
            "nonce": nonce,
        }
        return self._consent(params, account, share_email=share_email, name=name, cancel=cancel)

    def authorize(
        self,
        url: str,
        account: str = DEFAULT_ACCOUNT,
        *,
        share_email: bool = True,
        name: str | dict[str, str] | None = None,
        cancel: bool = False,
    ) -> SignIn:
        """The user follows ``url`` (your app's redirect to ``/auth/authorize``) and consents.

        The request's own ``client_id``, ``redirect_uri``, ``state``, ``nonce``, ``scope``,
        ``response_type`` and ``response_mode`` are used, so what comes back is what Apple would
        deliver to your callback for exactly that request.
        """
        query = urllib.parse.urlsplit(url).query
        pairs = urllib.parse.parse_qs(query, keep_blank_values=True, max_num_fields=32)
        params = {key: values[0] for key, values in pairs.items()}
        return self._consent(params, account, share_email=share_email, name=name, cancel=cancel)

    def _consent(
        self,
        params: Mapping[str, str | None],
        account: str,
        *,
        share_email: bool,
        name: str | dict[str, str] | None,
        cancel: bool,
    ) -> SignIn:
        body: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        body.update(account=account, share_email=share_email, cancel=cancel)
        if name is not None:
            body["name"] = name
        result = self._call("POST", "/authorize", body)
        form = {str(k): str(v) for k, v in result["params"].items()}
        return SignIn(
            code=form.get("code"),
            id_token=form.get("id_token"),
            state=form.get("state"),
            user=form.get("user"),
            error=form.get("error"),
            redirect_uri=result["redirect_uri"],
            response_mode=result["response_mode"],
            form=form,
        )

    def register_redirect_uri(self, uri: str, *, client_id: str | None = None) -> None:
        """Allow another return URL for ``client_id`` (default: the Services ID), as in Apple's
        developer portal; ``http://`` and ``localhost`` are accepted (Apple refuses them)."""
        cid = client_id or self.credentials.services_id
        self._call("POST", f"/clients/{urllib.parse.quote(cid)}/redirect-uris", {"uri": uri})

    # -- Apple IDs and what their owners do at appleid.apple.com ---------------------------------

    def create_account(self, email: str, name: str | None = None) -> Account:
        """A new test Apple ID; ``name`` is ``"First Last"``."""
        first, _, last = (name or "").strip().partition(" ")
        data = self._call(
            "POST", "/accounts", {"email": email, "first_name": first, "last_name": last}
        )
        return _account(data)

    def account(self, ref: str) -> Account:
        """The Apple ID with this email or id."""
        return _account(self._call("GET", f"/accounts/{urllib.parse.quote(ref, safe='@')}"))

    def sub_for(self, account: str, *, team_id: str | None = None) -> str:
        """The ``sub`` the team (default: the default team) sees for ``account``."""
        data = self._call("GET", f"/accounts/{urllib.parse.quote(account, safe='@')}")
        return str(data["subs"][team_id or self.credentials.team_id])

    def revoke_consent(self, account: str, *, team_id: str | None = None) -> list[SentNotification]:
        """The user stops using Sign in with Apple with the team's apps: ``consent-revoked``."""
        return self._account_action(account, "revoke-consent", {"team_id": team_id})

    def delete_account(self, account: str) -> list[SentNotification]:
        """The user deletes the Apple ID: ``account-delete`` to every team it signed in to."""
        return self._account_action(account, "delete-account", {})

    def set_email_forwarding(
        self, account: str, enabled: bool, *, team_id: str | None = None
    ) -> list[SentNotification]:
        """Turn relay forwarding off or on: ``email-disabled``/``email-enabled`` to each team
        where the user hides the email."""
        return self._account_action(
            account, "email-forwarding", {"enabled": enabled, "team_id": team_id}
        )

    def _account_action(
        self, account: str, action: str, body: dict[str, Any]
    ) -> list[SentNotification]:
        body = {k: v for k, v in body.items() if v is not None}
        body["wait"] = True
        ref = urllib.parse.quote(account, safe="@")
        data = self._call("POST", f"/accounts/{ref}/{action}", body)
        return [_sent(d) for d in data["notifications"]]

    # -- notifications ---------------------------------------------------------------------------

    def set_notification_url(
        self,
        url: str | None,
        *,
        asgi_app: Any = None,
        wsgi_app: Any = None,
        team_id: str | None = None,
    ) -> None:
        """Where the team's notifications go; ``None`` stops them.

        With ``asgi_app`` or ``wsgi_app`` they are delivered to that app in-process (for
        example ``url="http://testserver/apple/notifications"`` and your Flask app), otherwise
        over the network. Routes are forgotten after the test.
        """
        if asgi_app is not None or wsgi_app is not None:
            if url is None:
                raise ValueError("An in-process app needs the url it is reached at.")
            origin = urllib.parse.urlsplit(url)
            self._routes.add(
                f"{origin.scheme}://{origin.netloc}", asgi_app=asgi_app, wsgi_app=wsgi_app
            )
        team = team_id or self.credentials.team_id
        self._call("PUT", f"/teams/{team}/notification-url", {"url": url})

    def notifications(self) -> list[SentNotification]:
        """Every notification sent during this test, oldest first."""
        return [_sent(d) for d in self._call("GET", "/notifications")]

    # -- keys, faults, clock ---------------------------------------------------------------------

    def rotate_keys(self, *, grace_seconds: float = 7 * 86400) -> str:
        """A new signing key; the old one stays in the JWKS for ``grace_seconds``. Its kid."""
        return str(self._call("POST", "/keys/rotate", {"grace_seconds": grace_seconds})["kid"])

    def fail(
        self,
        endpoint: str,
        kind: str = "status",
        *,
        count: int | None = 1,
        probability: float | None = None,
        **details: Any,
    ) -> str:
        """Make ``endpoint`` (``token``, ``keys``, ``revoke``, ``authorize``...) misbehave.

        ``kind`` is ``status`` (``status=503``), ``latency`` (``latency_ms=``),
        ``malformed_json``, ``close`` or ``apple_error`` (``error=``, ``error_description=``);
        for the next ``count`` requests, or a ``probability`` of them. Returns the rule's id.
        """
        body: dict[str, Any] = {"endpoint": endpoint, "kind": kind, **details}
        if count is not None:
            body["count"] = count
        if probability is not None:
            body["probability"] = probability
        return str(self._call("POST", "/faults", body)["id"])

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward (codes expire after 300 s); the new time."""
        return float(self._call("POST", "/clock/advance", {"seconds": seconds})["now"])

    # -- lifecycle -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Put the emulator back as it was built: records, keys, clock, faults, notifications;
        close the clients handed out and forget notification routes."""
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        self._routes.clear()
        notifier = self.app.state.notifier
        if any(d.status == "pending" for d in notifier.log()):
            # Deliveries sent without waiting run on the emulator's thread: cancel them there.
            # Without any, skip the hop to that thread (the larger part of a reset).
            self._runner.call_on_thread(notifier.aclose())
        restore_checkpoint(self.state, self._saved, notifier=notifier, faults=self.app.state.faults)

    def close(self) -> None:
        """Stop the server and the thread (at the end of the session)."""
        self.reset()
        self._runner.call_on_thread(self._routes.aclose())
        self._runner.close()
        self.state.close()


def _account(data: dict[str, Any]) -> Account:
    name = data.get("name") or {}
    return Account(
        id=str(data["id"]),
        email=str(data["email"]),
        first_name=str(name.get("firstName", "")),
        last_name=str(name.get("lastName", "")),
    )


def _sent(data: dict[str, Any]) -> SentNotification:
    return SentNotification(
        type=str(data["type"]),
        sub=str(data["sub"]),
        team_id=str(data["team_id"]),
        url=data["url"],
        status=str(data["status"]),
        payload=str(data["payload"]),
    )
