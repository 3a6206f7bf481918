"""The real-time server behind ``shoprec serve``: MLflow's scoring server with a fast path.

The application is MLflow's own (``mlflow.pyfunc.scoring_server.init`` on the registered
pyfunc model: ``/ping``, ``/health``, ``/version`` and ``/invocations`` with every input
format MLflow accepts). In front of it sits one shortcut: a JSON ``POST /invocations``
whose body is a list of request records (``dataframe_records``, ``dataframe_split``,
``inputs`` or ``instances``) is answered by :meth:`ModelBundle.answer` directly, without
the pandas frame, schema enforcement and frame-to-JSON conversion MLflow runs per request
(about 6 of the 7 ms a single-user request costs there). The answer has MLflow's response
shape (``{"predictions": [...]}``) and a malformed request gets MLflow's error shape with
HTTP 400. Any other request (CSV, Parquet, ``params``, an unreadable body) goes to MLflow's
handler unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

#: Environment variable holding the model URI the server workers load.
MODEL_URI_ENV = "SHOPREC_SERVE_MODEL_URI"
#: JSON keys under which MLflow's server accepts a list of request records.
RECORD_KEYS = ("dataframe_records", "inputs", "instances")
#: Requests with more records than this are answered on a worker thread, so that one large
#: batch does not hold up the single-user requests behind it on the event loop.
INLINE_RECORDS = 32

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RecommendationServer:
    """ASGI application: the fast path for request records, MLflow's app for the rest.

    Args:
        mlflow_app: MLflow's scoring server application for the same model.
        answer: ``ModelBundle.answer`` of the loaded model, or ``None`` when the model was
            logged by a shoprec without it (then every request goes to MLflow's app).
    """

    def __init__(self, mlflow_app: Any,
                 answer: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None):
        self.mlflow_app = mlflow_app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if (self.answer is None or scope["type"] != "http" or scope["path"] != "/invocations"
                or scope["method"] != "POST" or not _is_json(scope)):
            await self.mlflow_app(scope, receive, send)
            return
        body = await _read_body(receive)
        records = request_records(body)
        if records is None:
            await self.mlflow_app(scope, _replay(body, receive), send)
            return
        status, payload = await self._respond(records)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _respond(self, records: list[Any]) -> tuple[int, bytes]:
        if not records:
            return _error("invalid request: no request records; send e.g. "
                          '{"dataframe_records": [{"user_id": "17850", "k": 10}]}')
        try:
            if len(records) > INLINE_RECORDS:
                answers = await asyncio.to_thread(self.answer, records)
            else:
                answers = self.answer(records)
        except (ValueError, TypeError) as exc:
            return _error(f"invalid request: {exc}")
        return 200, json.dumps({"predictions": answers}).encode()


def request_records(body: bytes) -> list[Any] | None:
    """The request records of a JSON body, or ``None`` when MLflow should handle it.

    Records come from ``dataframe_records``, ``inputs`` or ``instances`` holding a list
    of objects, or from ``dataframe_split`` (``columns`` and ``data``). A body with
    ``params``, another key, or one that is not JSON is left to MLflow (which answers
    or explains the error).
    """
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    key, value = next(iter(payload.items()))
    if key in RECORD_KEYS and isinstance(value, list) and all(
            isinstance(record, dict) for record in value):
        return value
    if key == "dataframe_split" and isinstance(value, dict):
        columns, rows = value.get("columns"), value.get("data")
        if isinstance(columns, list) and isinstance(rows, list) and all(
                isinstance(row, list) and len(row) == len(columns) for row in rows):
            return [dict(zip(columns, row, strict=True)) for row in rows]
    return None


def create_app() -> RecommendationServer:
    """Load the model named by ``SHOPREC_SERVE_MODEL_URI`` and build the application.

    Called by uvicorn in each server worker process (``factory=True``).
    """
    import mlflow
    from mlflow.pyfunc import scoring_server
    from threadpoolctl import threadpool_limits

    # One request is a vector-matrix product: BLAS threads only contend with the other
    # worker processes and the event loop.
    threadpool_limits(1)
    uri = os.environ[MODEL_URI_ENV]
    model = mlflow.pyfunc.load_model(uri)
    bundle = getattr(model.unwrap_python_model(), "bundle", None)
    answer = getattr(bundle, "answer", None)
    if answer is None:
        logger.warning("%s was logged without the fast request path; every request goes "
                       "through MLflow's pandas handler", uri)
    return RecommendationServer(scoring_server.init(model), answer)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json" and (
                b"charset" not in value.lower() or b"utf-8" in value.lower())
    return False


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body, then the connection's own events."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _error(message: str) -> tuple[int, bytes]:
    # MLflow's error shape, so clients handle both paths alike.
    return 400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE",
                            "message": message}).encode()
