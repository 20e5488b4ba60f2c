"""Sign in once through a sandbox's emulator and print the session token.

    python .ci/session_token.py http://127.0.0.1:8000 ack_… maria.ruiz@example.com

The sign-in is the one an app makes: ``apple_request_auth`` (an authorization URL with
server-side state), the user's consent on the emulator's control API (in place of Apple's page),
then ``apple_connect`` with the code and the state. Used by .ci/schemathesis.sh so that the
session operations are tested with a valid session.
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl, urlsplit

import httpx


def session_token(service: str, api_key: str, account: str) -> str:
    with httpx.Client(base_url=service, headers={"X-API-Key": api_key}, timeout=30) as http:
        started = http.post("/api/apple_request_auth")
        started.raise_for_status()
        query = dict(parse_qsl(urlsplit(started.json()["url"]).query))
        consent = http.post("/apple/emulator/authorize", json={**query, "account": account})
        consent.raise_for_status()
        params = consent.json()["params"]
        connected = http.post(
            "/api/apple_connect", data={"code": params["code"], "state": params["state"]}
        )
        if connected.status_code != 200:
            raise SystemExit(f"apple_connect: HTTP {connected.status_code} {connected.text}")
        return str(connected.json()["cookie"])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(session_token(*sys.argv[1:4]))
