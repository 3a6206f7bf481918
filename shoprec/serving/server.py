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
import contextlib
import hmac
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from shoprec.errors import ServingUnavailableError
from shoprec.serving.engine import DEFAULT_K, EXPLAIN_GRANTED, MAX_K

logger = logging.getLogger(__name__)

#: Environment variable holding the model URI the server workers load.
MODEL_URI_ENV = "SHOPREC_SERVE_MODEL_URI"
#: Environment variable with what the storefront page shows of the model (JSON).
MODEL_INFO_ENV = "SHOPREC_SERVE_MODEL_INFO"
#: The access token of shopper data on a server that serves it because it listens on
#: loopback (``shoprec serve`` makes one, or takes this variable's; the storefront link
#: carries it).
TOKEN_ENV = "SHOPREC_SERVE_TOKEN"
#: The request header that carries it.
TOKEN_HEADER = b"x-shoprec-token"
#: JSON keys under which MLflow's server accepts a list of request records.
RECORD_KEYS = ("dataframe_records", "inputs", "instances")
#: Requests with more records than this are answered on a worker thread, so that one large
#: batch does not hold up the single-user requests behind it on the event loop.
INLINE_RECORDS = 32
#: Requests naming more recent items than this (over all their records) go to a thread too:
#: one record of 100,000 held every other request, /ping included, for 230 ms.
INLINE_RECENT_ITEMS = 2000
#: And answers of more items than this (k summed): 32 records at k 1,000 held /ping for 1 s.
INLINE_ANSWER_ITEMS = 2000
#: What a client is told of a fault of the server's own (its erasure list unreadable): the
#: details, a file's path among them, go to the server's log only.
UNAVAILABLE = ("server error: this server cannot answer right now (a fault of its own, "
               "said in its log); send the request again later or to another server")


class Limits:
    """What one request may ask for; larger ones are refused before any work.

    Read from the environment (set by ``shoprec serve``'s options), so that every server
    worker process applies the same limits.

    Attributes:
        max_body_bytes: Largest request body (HTTP 413 above it).
        max_records: Most request records in one body (HTTP 413 above it).
        max_query_chars: Longest ``query`` text (HTTP 400 above it).
        max_answer_items: Most items one answer may hold, ``k`` summed over its records
            (HTTP 413 above it): a 33 KB body of 1,000 records at ``k`` 1,000 held 62 MB
            of answer for as long as its client did not read it.
        request_seconds: Longest time a request may take to arrive, headers and body,
            from its connection's opening or previous answer; the connection is closed
            past it (:mod:`shoprec.serving.protocol`).
    """

    ENV = {"max_body_bytes": "SHOPREC_SERVE_MAX_BODY_BYTES",
           "max_records": "SHOPREC_SERVE_MAX_RECORDS",
           "max_query_chars": "SHOPREC_SERVE_MAX_QUERY_CHARS",
           "max_answer_items": "SHOPREC_SERVE_MAX_ANSWER_ITEMS",
           "request_seconds": "SHOPREC_SERVE_REQUEST_SECONDS"}
    DEFAULTS = {"max_body_bytes": 1 << 20, "max_records": 1000, "max_query_chars": 500,
                "max_answer_items": 100_000, "request_seconds": 30}

    max_body_bytes: int
    max_records: int
    max_query_chars: int
    max_answer_items: int
    request_seconds: int

    def __init__(self, max_body_bytes: int | None = None, max_records: int | None = None,
                 max_query_chars: int | None = None,
                 max_answer_items: int | None = None,
                 request_seconds: int | None = None) -> None:
        given = {"max_body_bytes": max_body_bytes, "max_records": max_records,
                 "max_query_chars": max_query_chars, "max_answer_items": max_answer_items,
                 "request_seconds": request_seconds}
        for name, value in given.items():
            if value is None:
                value = int(os.environ.get(self.ENV[name], self.DEFAULTS[name]))
            setattr(self, name, value)

    def environment(self) -> dict[str, str]:
        """The variables that carry these limits to the server workers."""
        return {self.ENV[name]: str(getattr(self, name)) for name in self.ENV}

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
                 answer: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None,
                 limits: Limits | None = None, bundle: Any = None,
                 info: dict[str, Any] | None = None) -> None:
        self.mlflow_app = mlflow_app
        self.answer = answer
        self.limits = limits or Limits()
        self.bundle = bundle
        self.info = info or {}
        # On every answer: which model and version gave it, so that a click logged beside
        # it (an A/B test's arms) is put down to the right one.
        served = (f"{self.info['name']}/{self.info['version']}"
                  if self.info.get("name") and self.info.get("version") else "")
        self.headers = [*_SECURITY_HEADERS, *([(MODEL_HEADER, served.encode(
            "ascii", "backslashreplace"))] if served else [])]
        # Read once: the shopper data of a loopback server is its holder's alone.
        self.token = os.environ.get(TOKEN_ENV) or None

    def _granted(self, scope: Scope) -> bool:
        """Whether a request carries this server's token (header, or ``token=`` query)."""
        if self.token is None:
            return True
        given = dict(scope.get("headers", [])).get(TOKEN_HEADER, b"")
        if not given:
            query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
            given = query.get("token", [""])[0].encode()
        return hmac.compare_digest(given, self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope.

        A request still unanswered when a stop's grace period ends (a client that never
        finished its body) is answered 503, where uvicorn's cancel gave a 500 and logged a
        traceback as a fault.
        """
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._serve(scope, receive, tracked)
        except ClientGone:
            return  # no one to answer, and nothing worked on
        except asyncio.CancelledError:
            if scope["type"] != "http" or started:
                raise
            with contextlib.suppress(Exception):
                await _send(send, *_error("server error: the server is stopping; send the "
                                          "request again", 503))

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = _secured(send, self.headers)  # MLflow's own answers too
        if scope["type"] == "http" and self.info.get("shopper_data") == "loopback":
            if not _to_loopback(scope):
                # Shopper data is on because the server listens on loopback; a request for
                # another host name reached it through a proxy or a rebound DNS name.
                await _send(send, *_error("this server answers requests to 127.0.0.1, "
                                          "localhost or [::1] only; start it with "
                                          "--explanations (or --no-explanations) to serve "
                                          "another host name", 403))
                return
            # A proxy on this machine (nginx's plain proxy_pass) sends a loopback Host too:
            # shopper data goes only to requests carrying the server's token.
            EXPLAIN_GRANTED.set(self._granted(scope))
        storefront_path = self.bundle is not None and (
            scope.get("path") == "/" or str(scope.get("path", "")).startswith("/api/")
            or scope.get("path") == "/events")
        if scope["type"] == "http" and not storefront_path:
            wrong = _route_error(scope)
            if wrong is not None:
                status, payload, headers = wrong
                await _send(send, status, payload, headers=headers)
                return
        if scope["type"] == "http" and self.bundle is not None \
                and scope["path"] in ("/ping", "/health"):
            # A load balancer's check: green only while answers can be given. A server
            # that cannot read its erasure list refuses every answer (it must not name an
            # erased shopper's purchases), so it is not healthy either.
            try:
                self.bundle.suppressed_rows()
            except ServingUnavailableError as exc:
                logger.error("health check failed: %s", exc)
                await _send(send, *_error(UNAVAILABLE, 503))
                return
            if scope["method"] == "HEAD":
                await _send(send, 200, b"")
                return
            await self.mlflow_app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "HEAD" and not storefront_path:
            await _send(send, 200, b"")  # /version, or /ping without a bundle to check
            return
        if scope["type"] == "http" and storefront_path:
            from shoprec.serving import storefront

            status, payload, kind = await storefront.handle(self, scope, receive)
            await _send(send, status, payload, kind)
            return
        if scope["type"] != "http" or scope["path"] != "/invocations" \
                or scope["method"] != "POST":
            await self.mlflow_app(scope, receive, send)
            return
        if _content_type(scope) is None:
            await _send(send, *_error("invalid request: no Content-Type header; send JSON "
                                      "with Content-Type: application/json", 415))
            return
        body = await _read_body(receive, self.limits.max_body_bytes)
        if body is None:
            await _send(send, *_error(f"request body over {self.limits.max_body_bytes:,} "
                                      "bytes; send fewer records per request (shoprec serve "
                                      "--max-body-bytes sets the limit)", 413))
            return
        try:
            document: Any = read_json(body) if _is_json(scope) else None
            records = request_records(document)
        except ValueError as exc:
            await _send(send, *_error(f"invalid request: {exc}"))
            return
        if records is None or self.answer is None or "params" in document:
            # MLflow's handler answers (its own formats, "params"); the limits hold for it
            # too, so a body it will read is checked here first: a CSV or Parquet one too,
            # where a few kilobytes can hold hundreds of thousands of rows.
            try:
                counted = (_records_and_queries(document) if _is_json(scope) else
                           _table_records_and_queries(_content_type(scope) or b"", body,
                                                      self.limits))
            except ValueError as exc:
                await _send(send, *_error(f"invalid request: {exc}"))
                return
            refused = self._over_limits(*counted)
            if refused is not None:
                await _send(send, *refused)
                return
            await self.mlflow_app(scope, _replay(body, receive), send)
            return
        await _send(send, *(await self._respond(records)))

    def _over_limits(self, count: int, queries: list[Any],
                     asked: int = 0) -> tuple[int, bytes] | None:
        """The error for a request over the limits, or None.

        ``count`` records, ``asked`` items in all (``k`` summed), or one of ``queries``.
        """
        if count > self.limits.max_records:
            return _error(f"{count:,} request records in one body, more than the "
                          f"{self.limits.max_records:,} allowed; split the batch (shoprec "
                          "serve --max-records sets the limit)", 413)
        if asked > self.limits.max_answer_items:
            return _error(f"{asked:,} items asked for in one body (k summed over its "
                          f"records), more than the {self.limits.max_answer_items:,} "
                          "allowed; split the batch or ask for a smaller k (shoprec serve "
                          "--max-answer-items sets the limit)", 413)
        for query in queries:
            if isinstance(query, str) and len(query) > self.limits.max_query_chars:
                return _error(f"invalid request: a query of {len(query):,} characters, more "
                              f"than the {self.limits.max_query_chars:,} allowed")
        return None

    async def _respond(self, records: list[Any]) -> tuple[int, bytes]:
        if not records:
            return _error("invalid request: no request records; send e.g. "
                          '{"dataframe_records": [{"user_id": "17850", "k": 10}]}')
        refused = self._over_limits(len(records), [r.get("query") for r in records],
                                    sum(_asked(r) for r in records))
        if refused is not None:
            return refused
        if self.answer is None:  # no fast path: such requests went to MLflow's handler
            return _error("invalid request: this server only answers through MLflow")
        try:
            # Large batches, long recent-item lists and explanations (a model call per
            # request) leave the event loop free for the small requests beside them.
            if len(records) > INLINE_RECORDS or any(
                    isinstance(r, dict) and r.get("explain") for r in records) or sum(
                    _recent_count(r) for r in records) > INLINE_RECENT_ITEMS or sum(
                    _asked(r) for r in records) > INLINE_ANSWER_ITEMS:
                body = await asyncio.to_thread(_answered, self.answer, records)
            else:
                body = _answered(self.answer, records)
        except (ValueError, TypeError, ArithmeticError) as exc:  # 10**400 as a float
            return _error(f"invalid request: {exc}")
        except ServingUnavailableError as exc:  # a fault of this server's (its erasure list)
            logger.error("request failed: %s", exc)
            return _error(UNAVAILABLE, 503)
        except Exception as exc:  # a bug: said as one (500), and logged with its traceback
            logger.exception("request failed")
            return _error(f"internal error: {type(exc).__name__}: {exc}", 500)
        return 200, body


def _asked(record: Any) -> int:
    """How many items ``record`` asks for: its ``k``, at most the engine's largest.

    A ``k`` the engine will refuse counts as the default here; it is refused there.
    """
    value = record.get("k") if isinstance(record, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_K)
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(min(value, MAX_K))
    return DEFAULT_K


def _recent_count(record: Any) -> int:
    """How many recent items ``record`` names (0 when it names none, or not as a list)."""
    value = record.get("recent_items") if isinstance(record, dict) else None
    return len(value) if isinstance(value, (list, tuple)) else 0


def _answered(answer: Callable[[list[Any]], list[Any]], records: list[Any]) -> bytes:
    """The JSON body of ``answer(records)``.

    Encoded one answer at a time: ``json.dumps`` holds the GIL for a whole call, and one
    call over a batch of 1,000 lists of 1,000 items (63 MB) stalled every other request
    for 3 to 6 s; between small calls the event loop gets its turn.
    """
    answers = answer(records)
    try:
        encoded = [json.dumps(a).encode() for a in answers]
    except (TypeError, ValueError) as exc:  # this server's fault, not the request's (a 500)
        raise RuntimeError(f"an answer could not be written as JSON: {exc}") from exc
    return b'{"predictions": [' + b", ".join(encoded) + b"]}"


def read_json(body: bytes) -> Any:
    """The JSON value of a request body.

    Raises:
        ValueError: The body is not JSON (or a number in it is too long to read), or is
            nested too deeply.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the JSON body is nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer of over 4,300 digits
        raise ValueError(f"the body is not valid JSON ({str(exc)[:200]})") from None


def request_records(payload: Any) -> list[Any] | None:
    """The request records of a JSON body's value, or ``None`` when MLflow should handle it.

    Records come from ``dataframe_records``, ``inputs`` or ``instances`` holding a list
    of objects, or from ``dataframe_split`` (``columns`` and ``data``), beside ``params``
    or not. A body of another shape (or not JSON: ``None``) is left to MLflow (which
    answers or explains the error).

    Raises:
        ValueError: ``dataframe_split`` names its columns other than by distinct text; or
            the body is no request MLflow reads either (not an object, no known field, a
            list of records holding other than objects), said here in shoprec's error shape
            rather than MLflow's ``BAD_REQUEST`` with a pandas dump.
    """
    example = '{"dataframe_records": [{"user_id": "17850", "k": 10}]}'
    if payload is None:
        return None  # not JSON: a CSV or Parquet body, for MLflow
    if not isinstance(payload, dict):
        raise ValueError(f"the body is a JSON object such as {example}, not a "
                         f"{type(payload).__name__}")
    unknown = sorted(set(payload) - {"params", "dataframe_split", *RECORD_KEYS})
    if unknown or not set(payload) - {"params"}:
        raise ValueError(f"a request holds one of dataframe_records, dataframe_split, inputs "
                         f"or instances (and optionally params); got "
                         f"{', '.join(map(repr, unknown)) or 'none of them'}: send e.g. "
                         f"{example}")
    if isinstance(payload.get("dataframe_records"), list) and not all(
            isinstance(record, dict) for record in payload["dataframe_records"]):
        raise ValueError(f"each of dataframe_records is an object of fields, as in {example}")
    keys = set(payload) - {"params"}
    if len(keys) != 1:
        return None
    key = keys.pop()
    value = payload[key]
    if key in RECORD_KEYS and isinstance(value, list) and all(
            isinstance(record, dict) for record in value):
        return value
    if key == "dataframe_split" and isinstance(value, dict):
        columns, rows = value.get("columns"), value.get("data")
        if isinstance(columns, list) and isinstance(rows, list) and all(
                isinstance(row, list) and len(row) == len(columns) for row in rows):
            if not all(isinstance(column, str) for column in columns):
                raise ValueError("dataframe_split's columns are field names (text), e.g. "
                                 '["user_id", "k"]')
            if len(set(columns)) != len(columns):
                raise ValueError("dataframe_split names a column more than once")
            return [dict(zip(columns, row, strict=True)) for row in rows]
    return None


def _k_sum(values: list[Any], rows: int) -> int:
    """Items asked for by ``rows`` records with these ``k`` values (the rest: the default)."""
    return sum(_asked({"k": v}) for v in values[:rows]) + DEFAULT_K * max(
        rows - len(values), 0)


def _records_and_queries(payload: Any) -> tuple[int, list[Any], int]:
    """A JSON body MLflow will read: its records, queries and items asked (for the limits).

    The items asked are ``k`` summed over the records. Any of MLflow's shapes: a list of
    records, ``dataframe_split``, or ``inputs`` / ``instances`` given by column; beside
    ``params`` or other keys. ``(0, [], 0)`` when
    the body is none of them (MLflow then explains).
    """
    if not isinstance(payload, dict):
        return 0, [], 0
    count, queries, asked = 0, [], 0
    for key, value in payload.items():
        if key in RECORD_KEYS and isinstance(value, list):
            count += len(value)
            queries += [r.get("query") for r in value if isinstance(r, dict)]
            asked += sum(_asked(r) for r in value)
        elif key in RECORD_KEYS and isinstance(value, dict):  # by column
            columns = [v if isinstance(v, list) else [v] for v in value.values()]
            width = max((len(c) for c in columns), default=0)
            count += width
            query = value.get("query")
            queries += query if isinstance(query, list) else [query]
            k = value.get("k", [])
            asked += _k_sum(k if isinstance(k, list) else [k] * width, width)
        elif key == "dataframe_split" and isinstance(value, dict):
            rows, names = value.get("data"), value.get("columns")
            if isinstance(rows, list):
                count += len(rows)
                if isinstance(names, list) and "query" in names:
                    at = names.index("query")
                    queries += [r[at] for r in rows if isinstance(r, list) and len(r) > at]
                at_k = names.index("k") if isinstance(names, list) and "k" in names else None
                asked += _k_sum([r[at_k] for r in rows if isinstance(r, list)
                                 and len(r) > at_k] if at_k is not None else [], len(rows))
    return count, queries, asked


def _table_records_and_queries(content_type: bytes, body: bytes, limits: Limits
                               ) -> tuple[int, list[Any], int]:
    """A CSV or Parquet body: its rows, queries and items asked (for the limits).

    Parquet's row count and sizes are read from its footer before any column is
    decompressed: a 4 KB file can hold 300,000 rows. ``(0, [])`` for any other type
    (MLflow refuses it).

    Raises:
        ValueError: The body is not Parquet, or decompresses to far more than its size.
    """
    import io

    import pandas as pd

    kind = content_type.split(b";")[0].strip().lower()
    if kind == b"application/vnd.apache.parquet":
        count, table = _parquet_rows(body, limits)
        if table is None:
            return count, [], 0
        ks = table.column("k").to_pylist() if "k" in table.column_names else []
        queries = table.column("query").to_pylist() if "query" in table.column_names else []
        return count, queries, _k_sum(ks, count)
    if kind == b"text/csv":
        # Every row ends a line, by \n, \r\n or \r alone (a quoted field may hold more: an
        # overcount, never under); the parsed rows count too.
        breaks = max(body.count(b"\n"), body.count(b"\r"))
        count = max(breaks + (not body.endswith((b"\n", b"\r"))) - 1, 0)
        if count > limits.max_records:
            return count, [], 0
        try:
            found = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False,
                                usecols=lambda column: column in ("query", "k"))
        except (ValueError, pd.errors.ParserError):
            return count, [], 0  # MLflow reads it, and explains what it cannot
        count = max(count, len(found))
        if count > limits.max_records:
            return count, [], 0
        ks = [_csv_k(v) for v in found["k"]] if "k" in found else []
        return count, list(found["query"]) if "query" in found else [], _k_sum(ks, count)
    return 0, [], 0


def _csv_k(text: str) -> Any:
    """A CSV cell's ``k`` as a number where it reads as one (else left to MLflow)."""
    try:
        return float(text)
    except ValueError:
        return None


def _parquet_rows(body: bytes, limits: Limits) -> tuple[int, Any]:
    """A Parquet body's row count and, within ``--max-records``, its table.

    The table is read with every text column dictionary-encoded, and its size as it would
    be decoded is checked before anything decodes it: a page of one string repeated a
    thousand times, or a dictionary of one 1 MB string, compresses to a few kilobytes.

    Raises:
        ValueError: Not Parquet, or it decodes to over 16 times ``--max-body-bytes``.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    bound = 16 * limits.max_body_bytes
    try:
        probe = pq.ParquetFile(io.BytesIO(body))
        meta = probe.metadata
        if meta.num_rows > limits.max_records:
            return meta.num_rows, None
        stored = sum(meta.row_group(g).column(c).total_uncompressed_size
                     for g in range(meta.num_row_groups) for c in range(meta.num_columns))
        if stored > bound:
            raise ValueError(f"the Parquet body unpacks to {stored:,} bytes, over 16 times "
                             f"the {limits.max_body_bytes:,} a body may have")
        texts = [probe.schema.column(c).path for c in range(len(probe.schema))
                 if probe.schema.column(c).physical_type == "BYTE_ARRAY"]
        table = pq.ParquetFile(io.BytesIO(body), read_dictionary=texts).read()
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(f"the body is not a Parquet file shoprec can read ({exc})") from exc
    decoded = sum(_decoded_bytes(chunk) for column in table.columns for chunk in column.chunks)
    if decoded > bound:
        raise ValueError(f"the Parquet body unpacks to {decoded:,} bytes, over 16 times "
                         f"the {limits.max_body_bytes:,} a body may have")
    return meta.num_rows, table


def _decoded_bytes(array: Any) -> int:
    """The bytes ``array`` takes once its dictionaries are expanded (as pandas reads it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        lengths = pc.binary_length(array.dictionary)
        return int(pc.sum(pc.take(lengths, array.indices)).as_py() or 0) + array.indices.nbytes
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return _decoded_bytes(array.flatten()) + array.offsets.nbytes
    return int(array.nbytes)


def create_app() -> RecommendationServer:
    """Load the model named by ``SHOPREC_SERVE_MODEL_URI`` and build the application.

    Called by uvicorn in each server worker process (``factory=True``).
    """
    from mlflow.pyfunc import scoring_server
    from threadpoolctl import threadpool_limits

    from shoprec.registry.loading import load_uri
    from shoprec.registry.served import ShoprecModel, apply_serving_environment

    # One request is a vector-matrix product: BLAS threads only contend with the other
    # worker processes and the event loop.
    threadpool_limits(1)
    uri = os.environ[MODEL_URI_ENV]
    model = load_uri(uri)
    wrapper = model.unwrap_python_model()
    bundle = getattr(wrapper, "bundle", None)
    if type(wrapper) is not ShoprecModel and bundle is not None:
        # A version logged by an older shoprec runs its own copy of the wrapper, which may
        # not know this server's settings: one served shoppers' histories with
        # explanations off, ignored live sessions and --diversity, and answered a fault as
        # the client's mistake, with a traceback. The same object is answered with the
        # installed class (a plain Python class: its state is the bundle alone).
        logger.info("%s was logged by an older shoprec: it is served with the installed "
                    "one's wrapper", uri)
        wrapper.__class__ = ShoprecModel
        apply_serving_environment(bundle)
    answer = getattr(bundle, "answer", None)
    if answer is None:
        logger.warning("%s was logged without the fast request path; every request goes "
                       "through MLflow's pandas handler", uri)
    info = json.loads(os.environ.get(MODEL_INFO_ENV) or "{}")
    return RecommendationServer(scoring_server.init(model), answer, Limits(),
                                bundle if answer is not None else None, info)


# A loopback name, and at most a port: ``[::1].evil.example`` or ``localhost:evil`` is not.
_LOOPBACK_HOST = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\])(:\d{1,5})?$")


def _to_loopback(scope: Scope) -> bool:
    """Whether the request's ``Host`` header names a loopback address (or is absent)."""
    host = dict(scope.get("headers", [])).get(b"host")
    if host is None:
        return True  # HTTP/1.0 without Host: not a browser's request
    return _LOOPBACK_HOST.match(host.decode("latin-1").strip().lower()) is not None


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value
    return None


def _is_json(scope: Scope) -> bool:
    value = _content_type(scope)
    if value is None:
        return False
    return value.split(b";")[0].strip().lower() == b"application/json" \
        and _utf8_charset(value)


class ClientGone(Exception):
    """The client went away before its request's body was whole: nothing is answered."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it grows past ``limit`` bytes.

    Raises:
        ClientGone: The connection closed mid-body (a hang-up, or the request deadline):
            the part received was scored as a whole body, its cut last row as a shopper.
    """
    chunks, size = [], 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, status: int, payload: bytes,
                kind: bytes = b"application/json",
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind),
                            (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


#: MLflow's scoring endpoints and the methods each answers (HEAD for load balancers'
#: checks, which MLflow refused with 405).
_ROUTES: dict[str, tuple[str, ...]] = {
    "/ping": ("GET", "HEAD"), "/health": ("GET", "HEAD"), "/version": ("GET", "HEAD"),
    "/invocations": ("POST",)}
#: The body types MLflow's scoring server reads (others got a text/plain 415).
_BODY_TYPES = (b"application/json", b"text/csv", b"application/vnd.apache.parquet")


def _route_error(scope: Scope) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """The JSON error for a path or method no endpoint answers, or a body it cannot read.

    One error shape (``error_code``, ``message``) for every refusal: MLflow's own answered
    404 and 405 as ``{"detail": ...}`` and 415 as plain text.
    """
    path, method = scope["path"], scope["method"]
    allowed = _ROUTES.get(path)
    if allowed is None:
        return (*_error(f"no endpoint {path}: this server answers POST /invocations, GET "
                        "/ping, /health and /version, and the storefront's / , /api/... "
                        "and /events where it is on", 404), [])
    if method not in allowed:
        return (*_error(f"{path} answers {' and '.join(allowed)}, not {method}", 405),
                [(b"allow", ", ".join(allowed).encode())])
    if path != "/invocations":
        return None
    encoding = dict(scope["headers"]).get(b"content-encoding", b"identity").strip().lower()
    if encoding not in (b"", b"identity"):
        return (*_error(f"Content-Encoding {encoding.decode('latin-1')} is not read; send "
                        "the body uncompressed", 415), [])
    kind = _content_type(scope)
    if kind is not None:
        main = kind.split(b";")[0].strip().lower()
        if main not in _BODY_TYPES:
            return (*_error(f"Content-Type {main.decode('latin-1')} is not read; send "
                            "application/json (or text/csv, application/vnd.apache.parquet)",
                            415), [])
        if not _utf8_charset(kind):
            return (*_error("the body is read as UTF-8; send it so (charset=utf-8)", 415),
                    [])
    return None


def _utf8_charset(kind: bytes) -> bool:
    """Whether a Content-Type names no charset, or one UTF-8 reads (utf8, us-ascii too)."""
    found = re.search(rb"charset\s*=\s*\"?([^\";\s]+)", kind, re.IGNORECASE)
    if found is None:
        return True
    name = found.group(1).lower().replace(b"-", b"").replace(b"_", b"")
    return name in (b"utf8", b"usascii", b"ascii")


#: On every answer: never read as another type, nor framed by another site, and the page's
#: address (which may carry the access token) never sent on as a referrer.
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                     (b"content-security-policy", b"frame-ancestors 'none'"),
                     (b"referrer-policy", b"no-referrer"),
                     # Answers are a shopper's (lists, histories): no cache keeps them.
                     (b"cache-control", b"no-store")]


class QuietServerLog(logging.Filter):
    """The server's console filter: without ``verbose``, warnings and a worker's death only.

    uvicorn logs a worker's death ("Child process [N] died", an OOM kill) at INFO, the
    level of its start-up chatter; this keeps the one and raises it to WARNING.
    """

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is shown (a worker's death is shown as a warning)."""
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        if record.name.startswith("uvicorn") and "died" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        return False


class AccessLogWithoutQuery(logging.Filter):
    """uvicorn's access log without query strings.

    ``/api/history?user_id=15311&token=...`` wrote a shopper's raw id (under
    pseudonymisation too) and the server's access token into a log kept for months; the
    path alone says which endpoint was asked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Cut the query from the request's path (uvicorn's third argument); keep the line."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


#: The answer's header naming the registered model and version that gave it.
MODEL_HEADER = b"x-shoprec-model"


def _secured(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``headers`` (the security ones and the model's) to the answer.

    An error answer is held until its body is whole, and MLflow's ``stack_trace`` taken out
    of it: any CSV body sent anonymously got a traceback naming the install's paths and
    versions.
    """
    held: dict[str, Any] | None = None
    chunks: list[bytes] = []

    async def secured(message: dict[str, Any]) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
            if message.get("status", 200) >= 400:
                held = message
                return
        elif held is not None and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _without_trace(b"".join(chunks))
            start = {**held, "headers": [
                (k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                + [(b"content-length", str(len(body)).encode())]}
            held = None
            await send(start)
            message = {"type": "http.response.body", "body": body, "more_body": False}
        await send(message)
    return secured


def _without_trace(body: bytes) -> bytes:
    """An error body without MLflow's ``stack_trace`` (logged instead), else as it was."""
    if not any(key in body for key in (b"stack_trace", b"sqlstate", b"error_class")):
        return body
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if not isinstance(error, dict):
        return body
    if "stack_trace" in error:
        logger.info("MLflow's error trace, not sent to the client: %s",
                    error.pop("stack_trace"))
    # MLflow's internal classification: keys the error shape does not have, which a
    # client's strict decoder failed on.
    for key in _MLFLOW_ONLY:
        error.pop(key, None)
    return json.dumps(error).encode()


#: Keys of MLflow's error bodies outside the one error shape (``error_code``, ``message``).
_MLFLOW_ONLY = ("sqlstate", "error_class")


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


def _error(message: str, status: int = 400) -> tuple[int, bytes]:
    # MLflow's error shape, so clients handle both paths alike; a server fault says so.
    return status, json.dumps({"error_code": "INVALID_PARAMETER_VALUE" if status < 500
                               else "TEMPORARILY_UNAVAILABLE", "message": message}).encode()
