"""What .ci/schemathesis.sh asks of a running sandbox besides the fuzzing itself.

    python .ci/sandbox_client.py session http://127.0.0.1:8000 ack_… maria.ruiz@example.com
    python .ci/sandbox_client.py exhaust-ip-limit http://127.0.0.1:8000

``session`` signs in once through the sandbox's emulator and prints the session token. The
sign-in is the one an app makes: ``apple_request_auth`` (an authorization URL with
server-side state), the user's consent on the emulator's control API (in place of Apple's page),
then ``apple_connect`` with the code and the state. Used by .ci/schemathesis.sh so that the
session operations are tested with a valid session.

``exhaust-ip-limit`` sends requests until this address is answered 429, early enough in a
window (the sandbox's windows are 60 s, aligned to the clock) that the requests that follow
for half a minute or more are answered 429 too, and their answers are checked as well.
"""

from __future__ import annotations

import sys
import time
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


WINDOW = 60
"""The sandbox's rate-limit window in seconds (the ``rate_limit_window`` default)."""


def _until_limited(http: httpx.Client, most: int = 5000) -> int:
    for sent in range(1, most + 1):
        if http.get("/api/validate_auth_cookie").status_code == 429:
            return sent
    raise SystemExit(f"no 429 after {most} requests: is the rate limit on?")


def exhaust_ip_limit(service: str) -> int:
    """Call a limited route until it answers 429 with half a window or more left; returns the
    number of calls in the last window."""
    with httpx.Client(base_url=service, timeout=30) as http:
        while True:
            sent = _until_limited(http)
            left = WINDOW - time.time() % WINDOW
            if left >= WINDOW / 2:
                return sent
            time.sleep(left + 0.5)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "session":
        print(session_token(*sys.argv[2:5]))
    elif len(sys.argv) == 3 and sys.argv[1] == "exhaust-ip-limit":
        print(f"429 after {exhaust_ip_limit(sys.argv[2])} requests")
    else:
        raise SystemExit(__doc__)
