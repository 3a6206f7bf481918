"""The storefront preview page and the small endpoints it uses, served by ``shoprec serve``.

* ``GET /``: one self-contained HTML page (plain JavaScript, no external assets) that calls
  the endpoints below and ``POST /invocations`` like any client.
* ``GET /api/info``: which registered model answers (name, alias, version, family, when it
  was registered) and what the server allows.
* ``GET /api/shoppers?q=PREFIX``: known shopper ids starting with ``PREFIX`` (at most 20).
* ``GET /api/history?user_id=ID``: a shopper's stored history and live session, with titles.
* ``POST /events``: a shopper's event (``user_id``, ``item_id``, ``event``: view, cart or
  purchase), appended to their live session (:mod:`shoprec.serving.sessions`), so the next
  request with their ``user_id`` reflects it without retraining.

Shopper ids and histories are personal data: ``/api/shoppers`` and ``/api/history`` answer
only where explanations are allowed (``shoprec serve --explanations``; by default, a server
listening on a loopback address, and then only to requests whose ``Host`` is a loopback
name, so that another site cannot reach them by pointing its own name at 127.0.0.1, and
that carry the server's access token, so that a proxy on the same machine cannot either),
and 403 otherwise. ``POST /events`` takes JSON only, which keeps other sites' forms out.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import numpy as np

from shoprec.data.schema import canonical_id
from shoprec.errors import ServingUnavailableError
from shoprec.serving.engine import EXPLAIN_GRANTED
from shoprec.serving.sessions import check_id

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from shoprec.serving.server import Receive, RecommendationServer, Scope

#: Shopper ids listed per ``/api/shoppers`` call.
SHOPPERS_LISTED = 20
#: Events accepted in one ``POST /events`` body.
MAX_EVENTS_PER_BODY = 100
#: Stored history items returned by ``/api/history`` (the heaviest first).
HISTORY_SHOWN = 100
_JSON, _HTML = b"application/json", b"text/html; charset=utf-8"


async def handle(server: RecommendationServer, scope: Scope,
                 receive: Receive) -> tuple[int, bytes, bytes]:
    """Answer one request to the page or its endpoints: status, body and content type."""
    import asyncio
    import sqlite3

    from shoprec.serving.server import _content_type, _read_body

    path, method = scope["path"], scope["method"]
    bundle = server.bundle
    try:
        if path == "/" and method in ("GET", "HEAD"):
            return 200, _page(), _HTML
        if path == "/events":
            if method != "POST":
                return _fail(405, "POST events here")
            if bundle.sessions is None:
                return _fail(404, "live sessions are off on this server (shoprec serve "
                             "--sessions FILE turns them on)")
            if not EXPLAIN_GRANTED.get():  # a loopback server's token: a proxy's client
                return _fail(403, "events are taken only from requests that carry this "
                             "server's access token (the storefront link `shoprec serve` "
                             "printed, or the header X-Shoprec-Token)")
            kind = (_content_type(scope) or b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                # Also what keeps other web sites' forms from posting here.
                return _fail(415, "send events as JSON with Content-Type: application/json")
            body = await _read_body(receive, server.limits.max_body_bytes)
            if body is None:
                return _fail(413, "request body too large")
            recorded = await asyncio.to_thread(record_events, bundle, body)
            return 200, json.dumps(recorded).encode(), _JSON
        if method != "GET":
            return _fail(405, f"{path} answers GET")
        query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
        if path == "/api/info":
            return 200, json.dumps(info(server)).encode(), _JSON
        if path in ("/api/shoppers", "/api/history"):
            refusal = _shopper_data_refusal(server)
            if refusal:
                return _fail(403, refusal)
            if path == "/api/shoppers":
                found = await asyncio.to_thread(shoppers, bundle, query.get("q", [""])[0])
                return 200, json.dumps({"shoppers": found}).encode(), _JSON
            past = await asyncio.to_thread(history, bundle, query.get("user_id", [""])[0])
            return 200, json.dumps(past).encode(), _JSON
        return _fail(404, f"nothing at {path}")
    except (ValueError, RecursionError, OverflowError) as exc:
        return _fail(400, f"invalid request: {exc}")
    except sqlite3.Error as exc:
        return _fail(503, f"the live sessions cannot be used right now: {exc}")
    except ServingUnavailableError as exc:
        from shoprec.serving.server import UNAVAILABLE

        logger.error("request failed: %s", exc)
        return _fail(503, UNAVAILABLE)
    except RuntimeError as exc:
        return _fail(500, f"server error: {exc}")


def _shopper_data_refusal(server: RecommendationServer) -> str | None:
    """Why shopper ids and histories are not served to this request, or ``None``."""
    if not server.bundle.explanations:
        return ("shopper data is not served here; start the server with `shoprec serve "
                "--explanations` to allow it")
    if not EXPLAIN_GRANTED.get():
        return ("shopper data is served only to requests that carry this server's access "
                "token: open the storefront link `shoprec serve` printed (it ends in "
                "#token=...), or send the header X-Shoprec-Token")
    # (A server that serves it because it listens on loopback has already refused requests
    # for any other host name, and granted it per request: see RecommendationServer.)
    return None


_PAGE: bytes | None = None


def _page() -> bytes:
    global _PAGE
    if _PAGE is None:  # read once per process
        _PAGE = resources.files("shoprec.serving").joinpath("storefront.html").read_bytes()
    return _PAGE


def info(server: RecommendationServer) -> dict[str, Any]:
    """What the page shows of the model and of the server's settings."""
    bundle = server.bundle
    # For this request: a page opened without the server's token sees no shopper data.
    allowed = bool(bundle.explanations) and EXPLAIN_GRANTED.get()
    return {**server.info, "model": bundle.meta.get("model"),
            "family": bundle.meta.get("family"), "explanations": allowed,
            # Without the token a loopback server takes no events: the page keeps the clicks.
            "sessions": bundle.sessions is not None and EXPLAIN_GRANTED.get(),
            "search": bundle.search is not None,
            # A version trained with --repeat-items: lists keep the shopper's own items.
            "repeat_items": bundle.keeps_seen}


def shoppers(bundle: Any, prefix: str, limit: int = SHOPPERS_LISTED) -> list[str]:
    """Known shopper ids starting with ``prefix``, in sorted order (erased ones left out)."""
    ordered = bundle.sorted_user_ids()
    prefix = prefix.strip()
    start = int(np.searchsorted(ordered, prefix, side="left"))
    out = []
    for value in ordered[start:start + 2 * limit]:
        if not str(value).startswith(prefix):
            break
        out.append(str(value))
    return [u for u, gone in zip(out, bundle.erased(out), strict=True) if not gone][:limit]


def history(bundle: Any, user_id: str) -> dict[str, Any]:
    """A shopper's stored items (most weight first) and live-session items, with titles."""
    from shoprec.serving.engine import stored_user_ids

    if not user_id.strip():
        raise ValueError("user_id is required")
    stored = stored_user_ids(bundle, [user_id])[0]
    if bundle.erased([stored])[0]:
        return {"user_id": user_id, "known": False, "items": [], "session": []}
    index = int(bundle.users.encode([stored])[0])
    items: list[int] = []
    if index >= 0:
        row = bundle.history[index]
        items = row.indices[np.argsort(-row.data, kind="stable")][:HISTORY_SHOWN].tolist()
    session = bundle.sessions.recent([stored]).get(stored, []) if bundle.sessions else []
    titles = bundle.title_array
    ids = bundle.items.ids
    return {"user_id": user_id, "known": index >= 0,
            "items": [{"item_id": str(ids[i]), "title": str(titles[i])} for i in items],
            "session": [{"item_id": i, "title": _title(bundle, i)} for i in session]}


def record_events(bundle: Any, body: bytes) -> dict[str, Any]:
    """Append the events of a ``POST /events`` body (one object or a list of them).

    Raises:
        ValueError: Not JSON, not events, or too many in one body.
    """
    from shoprec.serving.engine import stored_user_ids

    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError("the body is not JSON; send {\"user_id\": ..., \"item_id\": ..., "
                         "\"event\": \"view\"}") from None
    events = payload if isinstance(payload, list) else [payload]
    if not events or len(events) > MAX_EVENTS_PER_BODY \
            or not all(isinstance(e, dict) for e in events):
        raise ValueError(f"send one event object or a list of 1 to {MAX_EVENTS_PER_BODY}")
    unknown = sorted({k for e in events for k in e} - {"user_id", "item_id", "event",
                                                      "timestamp"})
    if unknown:
        named = ", ".join(str(name)[:80] for name in unknown[:10])
        raise ValueError(f"unknown event field(s) {named}; an event has "
                         "user_id, item_id, event and optionally timestamp (epoch seconds)")
    for event in events:  # before the catalogue is asked: ["22423"] is no unknown item
        if event.get("item_id") is not None:
            check_id("item_id", event["item_id"])
    # Stored under the id the model knows (a pseudonym when it uses them).
    users = stored_user_ids(bundle, [e.get("user_id") for e in events])
    items = [canonical_id(e.get("item_id")) for e in events]
    # A product added since the model was trained is left out, and said: it failed the
    # whole body before, and an app batching its clicks lost all of them for one.
    known = [not i or bool(at >= 0)
             for i, at in zip(items, bundle.items.encode(items), strict=True)]
    unknown_items = sorted({i for i, ok in zip(items, known, strict=True) if not ok})
    erased = bundle.erased(users)
    # An erased shopper's events are not kept, and the answer does not say so: "ignored: 1"
    # told anyone who posted an id that its shopper had asked to be forgotten.
    # Every event is checked, an erased shopper's too: a 400 for anyone else's bad event
    # and a 200 for theirs would tell them apart.
    # An unknown product's event too: its bad event name or clock is the app's bug.
    bundle.sessions.checked([(u, i, e.get("event"), e.get("timestamp"))
                             for u, i, e in zip(users, items, events, strict=True)])
    kept = [(u, i, e.get("event"), e.get("timestamp"))
            for u, i, e, gone, ok in zip(users, items, events, erased, known, strict=True)
            if ok and not gone]
    if kept:
        bundle.sessions.add_many(kept)
    answer: dict[str, Any] = {"recorded": int(sum(known))}
    if unknown_items:
        answer["unknown_items"] = unknown_items[:MAX_EVENTS_PER_BODY]
    return answer


def _title(bundle: Any, item: str) -> str:
    index = int(bundle.items.encode([item])[0])
    return str(bundle.title_array[index]) if index >= 0 else ""


def _fail(status: int, message: str) -> tuple[int, bytes, bytes]:
    return status, json.dumps({"error_code": "INVALID_PARAMETER_VALUE" if status < 500
                               else "TEMPORARILY_UNAVAILABLE",
                               "message": message}).encode(), _JSON
