"""``$default``: JSON messages from clients, routed by ``action``.

``{"action": "ping"}`` is answered with ``{"type": "pong"}`` on the same
connection. An ``id`` the client sends is echoed back when it is a string of
at most 128 characters or an integer; an integer goes back by the project's
number rule (``handlers.dynamo_json``): a JSON number when JavaScript holds it
exactly, else the exact decimal string (``"12345678901234567890"``), and not at
all beyond 128 digits. Anything else gets an ``error`` message with a ``code``
and a human ``message``:

================  ================================================
code              when
================  ================================================
binary_frame      the client sent a binary frame
too_large         the message exceeds ``MAX_INPUT_BYTES``
invalid_json      the message is empty or not standard JSON (``NaN``, ``Infinity``)
invalid_message   the JSON is not an object
missing_action    the object has no string ``action``
unknown_action    ``action`` names no known action
================  ================================================

The handler never raises on client input, and a reply that cannot be delivered
(the client left) is logged, not retried.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from handlers import aws, config, logs, strict_json
from handlers.delivery import Poster
from handlers.dynamo_json import number_to_plain
from handlers.management import ManagementApi, endpoint_from_request, frozen_credentials

CONFIG = config.default_config()
log = logs.logger(__name__)

ACTIONS = ("ping",)
MAX_ECHOED_ID_LENGTH = 128

_apis: dict[str, ManagementApi] = {}
_apis_lock = threading.Lock()


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def echoed_id(value: Any) -> str | int | float | None:
    """What a pong carries back as ``id`` (pure), or None to leave it out.

    Strings up to ``MAX_ECHOED_ID_LENGTH`` go back as they came. Integers follow
    the number rule every message follows: beyond 2**53 - 1 a JSON number may
    not mean the same value in JavaScript, so such an id goes back as its exact
    decimal text (or as a float's number when that is exact).
    """
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHOED_ID_LENGTH else None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        return number_to_plain(text) if len(text) <= MAX_ECHOED_ID_LENGTH else None
    return None


def reply_for(body: Any, is_base64: bool, max_bytes: int) -> dict[str, Any]:
    """The message to send back for one client message (pure; never raises)."""
    if is_base64:
        return error("binary_frame", "binary frames are not supported; send JSON text")
    if not isinstance(body, str) or not body.strip():
        return error("invalid_json", 'empty message; send a JSON object such as {"action": "ping"}')
    size = len(body.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        return error("too_large", f"message is {size} bytes; the limit is {max_bytes}")
    try:
        parsed = strict_json.loads(body)
    except strict_json.InvalidJson as bad:
        return error("invalid_json", f"message is not valid JSON: {bad}")
    if not isinstance(parsed, dict):
        return error("invalid_message", 'message must be a JSON object with an "action"')
    action = parsed.get("action")
    if not isinstance(action, str) or not action:
        return error("missing_action", 'message has no "action" string')
    if action == "ping":
        pong: dict[str, Any] = {"type": "pong"}
        echoed = echoed_id(parsed.get("id"))
        if echoed is not None:
            pong["id"] = echoed
        return pong
    shown = action if len(action) <= 64 else action[:64] + "..."
    return error("unknown_action", f"unknown action {shown!r}; known: {', '.join(ACTIONS)}")


def api_for(endpoint: str) -> ManagementApi:
    with _apis_lock:
        api = _apis.get(endpoint)
        if api is None:
            session = aws.session()
            api = ManagementApi(
                endpoint, region=aws.region(), credentials=frozen_credentials(session)
            )
            _apis[endpoint] = api
        return api


def respond(event: dict[str, Any], poster: Poster) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    connection_id = str(request_context.get("connectionId") or "")
    reply = reply_for(event.get("body"), bool(event.get("isBase64Encoded")), CONFIG.max_input_bytes)
    if reply["type"] == "error":
        log.info("client error", extra={"connectionId": connection_id, "code": reply["code"]})
    data = json.dumps(reply, separators=(",", ":")).encode("utf-8")
    try:
        response = poster.post_to_connection(connection_id, data)
    except Exception:
        log.exception("could not answer the client", extra={"connectionId": connection_id})
        return {"statusCode": 200}
    if not response.ok:
        log.warning(
            "could not answer the client",
            extra={
                "connectionId": connection_id,
                "status": response.status,
                "code": response.error_code,
            },
        )
    return {"statusCode": 200}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    try:
        endpoint = CONFIG.management_endpoint or endpoint_from_request(request_context)
    except ValueError:
        log.exception("cannot answer: no management endpoint")
        return {"statusCode": 200}
    return respond(event, api_for(endpoint))
