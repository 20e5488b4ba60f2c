"""The OpenAPI document of the service: every documented operation, its id and its parameters,
pinned, so that moving routes between modules cannot change what apps are told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appleconnect.server import create_app, load_settings

CONNECT = [
    "code",
    "state",
    "redirect_uri",
    "id_token",
    "nonce",
    "user",
    "refresh_token",
    "client_id",
]
# (path, method): (operationId, query parameters, body properties). The API key and the session
# are not parameters: the security schemes describe them.
OPERATIONS = {
    ("/api/apple_request_auth", "get"): ("apple_request_auth_get", ["redirect_uri"], []),
    ("/api/apple_request_auth", "post"): ("apple_request_auth_post", [], ["redirect_uri"]),
    ("/api/apple_connect", "post"): ("apple_connect_post", [], CONNECT),
    ("/api/validate_auth_cookie", "get"): ("validate_auth_cookie_get", [], []),
    ("/api/validate_auth_cookie", "post"): ("validate_auth_cookie_post", [], []),
    ("/api/get_currentuserinfo", "get"): ("get_currentuserinfo_get", [], []),
    ("/api/get_currentuserinfo", "post"): ("get_currentuserinfo_post", [], []),
    ("/api/logout", "post"): ("logout_post", [], []),
    ("/api/delete_account", "post"): ("delete_account_post", [], []),
    ("/auth/apple/start", "get"): ("start_auth_apple_start_get", ["next"], []),
    ("/auth/apple/callback", "post"): (
        "callback_auth_apple_callback_post",
        [],
        ["state", "code", "id_token", "user", "error"],
    ),
    ("/auth/apple/notifications", "post"): (
        "notifications_auth_apple_notifications_post",
        [],
        ["payload"],
    ),
}


def _body_properties(operation: dict[str, Any]) -> list[str]:
    """The properties of the body, the same in every media type the operation takes."""
    content = operation.get("requestBody", {}).get("content", {})
    names = [list(media["schema"].get("properties", {})) for media in content.values()]
    assert all(n == names[0] for n in names), names
    return names[0] if names else []


def _document(tmp_path: Path) -> dict[str, Any]:
    app = create_app(load_settings(data_dir=tmp_path, environ={}))
    return app.openapi()


def test_the_documented_operations_and_their_parameters(tmp_path: Path) -> None:
    document = _document(tmp_path)
    found = {
        (path, method): (
            op["operationId"],
            [p["name"] for p in op.get("parameters", [])],
            _body_properties(op),
        )
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert found == OPERATIONS
    assert document["info"] == {
        "title": "Apple Connect",
        "version": "1",
        "summary": "Accounts and sessions from Sign in with Apple, for web and native apps.",
    }


def test_api_operations_describe_the_error_body_and_the_rate_limit(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    errors = {"400", "401", "413", "415", "429", "503"}
    for path, more in (("/api/apple_connect", {"502"}), ("/api/logout", set())):
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200"} | errors | more
        error = responses["400"]["content"]["application/json"]["schema"]
        assert error["required"] == ["status", "error", "message"]
        assert set(responses["429"]["headers"]) == {"Retry-After"}
    body = paths["/api/apple_connect"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/x-www-form-urlencoded", "application/json"}
    assert set(paths["/api/delete_account"]["post"]["responses"]) == {"200", "404"} | errors
    connect = paths["/api/apple_connect"]["post"]["responses"]["200"]["content"]
    assert connect["application/json"]["schema"]["required"] == [
        "status",
        "email",
        "cookie",
        "access_token",
        "id_token",
        "api_response",
    ]


def test_routes_outside_the_api_stay_out_of_the_document(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    assert not [p for p in paths if p.startswith(("/admin", "/buttons", "/embed"))]
    assert not [p for p in paths if p.endswith("/")]
    assert "/healthz" not in paths
    assert "/" not in paths
