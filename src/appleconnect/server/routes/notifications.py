"""Apple's server-to-server notifications (consent revoked, account deleted, email forwarding
changed), posted to the notification URL registered with Apple."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from ..deps import ContainerDep
from ..jsonbody import check_json_shape
from ..openapi import NOTIFICATION_BODY, NOTIFICATION_RESPONSES
from ..signin import handle_notification

__all__ = ["router"]

router = APIRouter()

MAX_NOTIFICATION_BYTES = 16_384
"""Apple's notification body is one signed JWT of about 1 KB in a JSON object."""


@router.post(
    "/auth/apple/notifications",
    summary="Apple's server-to-server notifications",
    responses=NOTIFICATION_RESPONSES,
    openapi_extra={"requestBody": NOTIFICATION_BODY},
)
async def notifications(request: Request, service: ContainerDep) -> Response:
    body = await request.body()
    # Depth and size first: the library then parses a document that cannot exhaust the stack.
    check_json_shape(body, max_bytes=MAX_NOTIFICATION_BYTES, what="The notification body")
    event, applied = await handle_notification(service=service, body=body)
    return JSONResponse({"status": "ok", "event": event, "duplicate": not applied})
