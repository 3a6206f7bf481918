"""The HTTP front of ``shoprec serve`` (its ASGI app, without a network): every malformed or
oversized request gets a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.features.idmap import IdMap
from shoprec.models import Popularity
from shoprec.registry.bundle import ModelBundle
from shoprec.serving.server import UNAVAILABLE, Limits, RecommendationServer


async def _mlflow_app(scope, receive, send) -> None:
    """Stands in for MLflow's scoring app: says it was reached."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"handled_by": "mlflow"}'})


def _bundle() -> ModelBundle:
    history = sp.csr_matrix((np.random.default_rng(1).random((20, 12)) < 0.3)
                            .astype(np.float32))
    model = Popularity().fit(history)
    return ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(20)]),
                       items=IdMap([f"i{i}" for i in range(12)]), history=history,
                       fallback=model, meta={"model": "popularity"})


@pytest.fixture(scope="module")
def app() -> RecommendationServer:
    bundle = _bundle()
    return RecommendationServer(_mlflow_app, bundle.answer,
                                Limits(max_body_bytes=20_000, max_records=50,
                                       max_query_chars=100, max_answer_items=200))


def post(app, body: bytes | str, headers: dict | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/invocations", content=body,
                                     headers={"Content-Type": "application/json"}
                                     if headers is None else headers)
    return asyncio.run(go())


def records(*rows: dict) -> str:
    return json.dumps({"dataframe_records": list(rows)})


def test_a_good_request_is_answered(app) -> None:
    answer = post(app, records({"user_id": "u1", "k": 3}))
    assert answer.status_code == 200 and len(answer.json()["predictions"][0]["item_ids"]) == 3
    # Never read as another type, nor framed by another site (a second reader's point).
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("body, headers, status, words", [
    (records({"user_id": "u1"}), {}, 415, "no Content-Type header"),
    ('{"dataframe_records": [{"user_id": "u1", "k": 1e400}]}', None, 400,
     "k must be an integer"),
    ('{"dataframe_records": [{"user_id": "u1", "k": Infinity}]}', None, 400,
     "k must be an integer"),
    (records({"user_id": "u1", "recent_items": "i3"}), None, 400,
     "recent_items must be a list of item ids"),
    ("[" * 100_00 + "]" * 100_00, None, 400, "nested too deeply"),
    (records(*[{"user_id": "u1"}] * 51), None, 413, "more than the 50 allowed"),
    # An answer's size is bounded as the body's is: k summed over the records.
    (records(*[{"user_id": "u1", "k": 100}] * 3), None, 413,
     "300 items asked for in one body (k summed over its records), more than the 200"),
    (records(*[{"user_id": "u1"}] * 21), None, 413, "210 items asked for"),
    (records({"query": "mug " * 40}), None, 400, "a query of 160 characters"),
    (records({"user_id": "u1", "q": "x" * 30_000}), None, 413, "request body over 20,000"),
    (records({"shopper": "u1"}), None, 400, "unknown request field(s) shopper"),
    (records(), None, 400, "no request records"),
    # Found by a second reader: each was a 500, or slipped past a limit.
    ('{"dataframe_records": [{"user_id": "u1", "diversity": 1' + "0" * 400 + "}]}", None,
     400, "diversity must be a number between 0 and 1"),
    ('{"dataframe_split": {"columns": [["user_id"]], "data": [["u1"]]}}', None, 400,
     "columns are field names"),
    ('{"dataframe_split": {"columns": ["user_id", "user_id"], "data": [["u1", "u2"]]}}',
     None, 400, "names a column more than once"),
    ('{"dataframe_records": [{"user_id": ' + "1" * 5000 + "}]}", None, 400,
     "the body is not valid JSON"),
    ('{"dataframe_records": [{"user_id": "u1"}', None, 400, "the body is not valid JSON"),
    (json.dumps({"dataframe_records": [{"user_id": "u1"}] * 51, "params": {}}), None, 413,
     "more than the 50 allowed"),
    (json.dumps({"dataframe_records": [{"query": "mug " * 40}], "params": {}}), None, 400,
     "a query of 160 characters"),
    # A front-end developer's: MLflow answered these BAD_REQUEST, or with a pandas dump.
    (json.dumps({"dataframe_records": [{"user_id": "u1"}], "other": 0}), None, 400,
     "got 'other'"),
    ('{"records": [{"user_id": "u1"}]}', None, 400, "got 'records'"),
    ("{}", None, 400, "got none of them"),
    ('[{"user_id": "u1"}]', None, 400, "the body is a JSON object such as"),
    ('{"dataframe_records": ["u1"]}', None, 400, "each of dataframe_records is an object"),
    (records({"user_id": "u1", "k": "5"}), None, 400, "k must be an integer, got '5'"),
    (records({"user_id": "u1"}), {"Content-Type": "application/json",
                                  "Content-Encoding": "gzip"}, 415,
     "Content-Encoding gzip is not read"),
    (records({"user_id": "u1"}), {"Content-Type": "text/plain"}, 415,
     "Content-Type text/plain is not read"),
    (records({"user_id": "u1"}), {"Content-Type": "application/json; charset=latin-1"}, 415,
     "read as UTF-8"),
    (json.dumps({"inputs": {"user_id": ["u1"] * 51}}), None, 413, "more than the 50 allowed"),
    (json.dumps({"inputs": {"user_id": "u1", "query": "mug " * 40}}), None, 400,
     "a query of 160 characters"),
    (json.dumps({"dataframe_split": {"columns": ["query"], "data": [["mug " * 40]]},
                 "params": {}}), None, 400, "a query of 160 characters"),
    (records({"user_id": ["u1"]}), None, 400, "user_id must be text or a number, got list"),
    (records({"user_id": True}), None, 400, "user_id must be text or a number, got bool"),
    ('{"dataframe_records": [{"user_id": Infinity}]}', None, 400,
     "user_id must be text or a finite number"),
    ('{"dataframe_records": [{"user_id": 1e400}]}', None, 400,
     "user_id must be text or a finite number"),
    (records({"query": {"text": "mug"}}), None, 400, "query must be text or a number"),
    (records({"user_id": "u1", "recent_items": [["i3"]]}), None, 400,
     "an item of recent_items must be text or a number"),
])
def test_malformed_and_oversized_requests_get_a_4xx_naming_the_problem(
        app, body: str, headers: dict | None, status: int, words: str) -> None:
    answer = post(app, body, headers)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]


def test_utf8_by_any_of_its_names_is_read(app) -> None:
    for charset in ("utf8", "UTF-8", '"utf-8"', "us-ascii"):
        answer = post(app, records({"user_id": "u1", "k": 2}),
                      {"Content-Type": f"application/json; charset={charset}"})
        assert answer.status_code == 200, (charset, answer.text)


def test_every_path_and_method_gets_an_answer_in_one_shape(app) -> None:
    """MLflow answered an unknown path or method with {"detail": ...} and HEAD /ping with
    405; a load balancer's HEAD check is answered, every refusal has an error_code."""
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.get("/nothing"), await client.get("/invocations"),
                    await client.options("/invocations"), await client.head("/ping"),
                    await client.head("/version"), await client.get("/ping")]
    missing, get, options, head, version, ping = asyncio.run(go())
    assert missing.status_code == 404 and "no endpoint /nothing" in missing.json()["message"]
    assert get.status_code == options.status_code == 405
    assert get.headers["allow"] == "POST" and get.json()["error_code"]
    assert (head.status_code, head.content, version.status_code) == (200, b"", 200)
    assert ping.json() == {"handled_by": "mlflow"}


def test_other_formats_still_reach_mlflows_handler(app) -> None:
    answer = post(app, "user_id\nu1\n", {"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.json() == {"handled_by": "mlflow"}
    # MLflow's params: its handler answers, once the limits are checked.
    answer = post(app, json.dumps({"dataframe_records": [{"user_id": "u1"}], "params": {}}))
    assert answer.status_code == 200 and answer.json() == {"handled_by": "mlflow"}


def _parquet(frame) -> bytes:
    import io

    out = io.BytesIO()
    frame.to_parquet(out, index=False, compression="zstd")
    return out.getvalue()


def test_csv_and_parquet_bodies_are_held_to_the_limits(app) -> None:
    """A 2 KB Parquet body of 10,000 records (or a CSV of short lines) went to MLflow
    unchecked: the reader's 625 MB answer and a 1.7 GB server."""
    import io

    import pandas as pd

    parquet = {"Content-Type": "application/vnd.apache.parquet"}
    many = _parquet(pd.DataFrame({"user_id": ["u1"] * 10_000, "k": [10] * 10_000}))
    assert len(many) < 20_000  # under the body limit: only the record count refuses it
    answer = post(app, many, parquet)
    assert answer.status_code == 413 and "10,000 request records" in answer.json()["message"]
    answer = post(app, "user_id\n" + "u1\n" * 60, {"Content-Type": "text/csv"})
    assert answer.status_code == 413 and "60 request records" in answer.json()["message"]
    answer = post(app, "user_id\r" + "u1\r" * 60, {"Content-Type": "text/csv"})  # CR only
    assert answer.status_code == 413 and "60 request records" in answer.json()["message"]
    # An answer's size too, whichever handler answers: MLflow's params, by column, split,
    # Parquet or CSV (each made a 62 MB answer past the limit).
    big = [{"user_id": "u1", "k": 100}] * 3
    for body, kind in (
            (json.dumps({"dataframe_records": big, "params": {}}), None),
            (json.dumps({"inputs": {"user_id": ["u1"] * 3, "k": [100] * 3}, "params": {}}),
             None),
            (json.dumps({"dataframe_split": {"columns": ["user_id", "k"],
                                             "data": [["u1", 100]] * 3}}), None),
            (_parquet(pd.DataFrame(big)), parquet),
            ("user_id,k\n" + "u1,100\n" * 3, {"Content-Type": "text/csv"})):
        answer = post(app, body, kind)
        assert answer.status_code == 413, (kind, answer.text)
        assert "300 items asked for" in answer.json()["message"]
    long_query = _parquet(pd.DataFrame({"query": ["mug " * 40]}))
    answer = post(app, long_query, parquet)
    assert answer.status_code == 400 and "a query of 160 characters" in answer.json()["message"]
    answer = post(app, "query\n" + "mug " * 40 + "\n", {"Content-Type": "text/csv"})
    assert answer.status_code == 400 and "a query of 160 characters" in answer.json()["message"]
    # A page of one string, and a dictionary of one: few kilobytes each, 4 MB decoded.
    for dictionary in (False, True):
        frame = pd.DataFrame({"user_id": ["u" * 100_000] * 40})
        out = io.BytesIO()
        frame.to_parquet(out, compression="zstd", use_dictionary=dictionary)
        assert len(out.getvalue()) < 20_000
        answer = post(app, out.getvalue(), parquet)
        assert answer.status_code == 400 and "unpacks to" in answer.json()["message"]
    answer = post(app, b"PAR1 not really", parquet)
    assert answer.status_code == 400 and "not a Parquet file" in answer.json()["message"]
    # Within the limits, MLflow's handler reads them as before.
    few = _parquet(pd.DataFrame({"user_id": ["u1", "u2"], "k": [3, 3]}))
    assert post(app, few, parquet).json() == {"handled_by": "mlflow"}
    assert post(app, "user_id,k\nu1,3\n", {"Content-Type": "text/csv"}).json() == {
        "handled_by": "mlflow"}


def test_a_server_that_cannot_read_its_erasure_list_is_not_healthy(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Every answer failed while /ping and /health stayed green, so a load balancer kept
    sending traffic; the failure read as the client's mistake (INVALID_PARAMETER_VALUE).
    What is wrong goes to the log only: anonymous clients were told the list's path."""
    from shoprec.privacy import SUPPRESSIONS_ENV

    listing = tmp_path / "erase.jsonl"
    monkeypatch.setenv(SUPPRESSIONS_ENV, str(listing))
    bundle = _bundle()
    server = RecommendationServer(_mlflow_app, bundle.answer, Limits(), bundle)

    def get(path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=server)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(path)
        return asyncio.run(go())

    assert get("/ping").status_code == get("/health").status_code == 200
    listing.write_text("garbage\n")
    for path in ("/ping", "/health"):
        caplog.clear()
        answer = get(path)
        assert answer.status_code == 503, answer.text
        assert answer.json()["message"] == UNAVAILABLE and str(tmp_path) not in answer.text
        assert "suppression list cannot be read" in caplog.text and str(listing) in caplog.text
    answer = post(server, records({"user_id": "u1"}))
    assert answer.status_code == 503 and answer.json()["message"] == UNAVAILABLE
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_SERVE_MAX_RECORDS", "7")
    assert Limits().max_records == 7 and Limits(max_records=3).max_records == 3
    assert Limits(1, 2, 3, 4, 5).environment() == {"SHOPREC_SERVE_MAX_BODY_BYTES": "1",
                                                   "SHOPREC_SERVE_MAX_RECORDS": "2",
                                                   "SHOPREC_SERVE_MAX_QUERY_CHARS": "3",
                                                   "SHOPREC_SERVE_MAX_ANSWER_ITEMS": "4",
                                                   "SHOPREC_SERVE_REQUEST_SECONDS": "5"}


def test_a_long_recent_item_list_is_answered_off_the_event_loop(
        app, monkeypatch: pytest.MonkeyPatch) -> None:
    """One record of 100,000 recent items held every other request for 230 ms."""
    from shoprec.serving import server

    threaded: list[int] = []
    real = asyncio.to_thread

    async def to_thread(function, *args):
        threaded.append(len(args[-1]))
        return await real(function, *args)

    monkeypatch.setattr(server.asyncio, "to_thread", to_thread)
    monkeypatch.setattr(server, "INLINE_RECENT_ITEMS", 5)
    assert post(app, records({"user_id": "u1", "recent_items": ["i1", "i2"]})
                ).status_code == 200
    assert threaded == []
    answer = post(app, records({"user_id": "u1", "recent_items": [f"i{n}" for n in range(8)]}))
    assert answer.status_code == 200 and threaded == [1]
    # And a large answer (32 records at k 1,000 held /ping for a second): by items asked.
    monkeypatch.setattr(server, "INLINE_ANSWER_ITEMS", 15)
    assert post(app, records({"user_id": "u1", "k": 10})).status_code == 200
    assert threaded == [1]
    assert post(app, records({"user_id": "u1", "k": 10}, {"user_id": "u2", "k": 10})
                ).status_code == 200
    assert threaded == [1, 2]


def test_a_body_cut_off_is_not_worked_on() -> None:
    """A deadline cut or hang-up mid-upload sent the part received on as a whole body."""
    from shoprec.serving import server as module

    reached: list[bytes] = []

    async def mlflow(scope, receive, send) -> None:
        reached.append(b"called")

    async def go() -> list[dict]:
        sent: list[dict] = []
        parts = [{"type": "http.request", "body": b"user_id,k\n1", "more_body": True},
                 {"type": "http.disconnect"}]

        async def receive() -> dict:
            return parts.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/invocations",
                 "headers": [(b"content-type", b"text/csv")], "query_string": b""}
        await module.RecommendationServer(mlflow, _bundle().answer, Limits())(
            scope, receive, send)
        return sent

    assert asyncio.run(go()) == [] and reached == []


def test_an_erasure_list_that_shrinks_or_goes_makes_the_server_unhealthy(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A list moved away while the server ran read as "nobody erased": the erased shopper
    got their own recommendations again, and /health stayed 200."""
    from shoprec.privacy import SUPPRESSIONS_ENV, SuppressionList

    listing = tmp_path / "erase.jsonl"
    monkeypatch.setenv(SUPPRESSIONS_ENV, str(listing))
    bundle = _bundle()
    server = RecommendationServer(_mlflow_app, bundle.answer, Limits(), bundle)
    assert post(server, records({"user_id": "u1"})).json()["predictions"][0]["source"] \
        == "model"
    SuppressionList().add("u1", "ops", "request")
    assert post(server, records({"user_id": "u1"})).json()["predictions"][0]["source"] \
        == "popularity"
    kept = listing.read_text()
    listing.rename(tmp_path / "moved.jsonl")
    answer = post(server, records({"user_id": "u1"}))
    assert answer.status_code == 503 and answer.json()["message"] == UNAVAILABLE
    assert "is gone since this server read it" in caplog.text
    listing.write_text("")  # emptied
    assert post(server, records({"user_id": "u1"})).status_code == 503
    assert "lost records (1 subject hash) since" in caplog.text
    listing.write_text(kept)  # put back: answered again, still erased
    assert post(server, records({"user_id": "u1"})).json()["predictions"][0]["source"] \
        == "popularity"
    # A worker started again after a crash has read no list before: the server's count
    # at start (handed down by `shoprec serve`) keeps it from taking a shrunken one.
    monkeypatch.setenv("SHOPREC_SERVE_ERASURES_AT_START", "1")
    restarted = _bundle()
    again = RecommendationServer(_mlflow_app, restarted.answer, Limits(), restarted)
    listing.write_text("")
    caplog.clear()
    answer = post(again, records({"user_id": "u1"}))
    assert answer.status_code == 503 and "lost records (1 subject hash)" in caplog.text


async def _mlflow_traceback(scope, receive, send) -> None:
    """Stands in for MLflow's scoring app refusing a CSV body, as it does, with a trace."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": "Failed to parse input",
                       "sqlstate": "KAM00", "error_class": "X",
                       "stack_trace": "Traceback (most recent call last):\n  File "
                                      "\"/srv/venv/lib/python3.11/site-packages/mlflow\""})
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body[:20].encode(), "more_body": True})
    await send({"type": "http.response.body", "body": body[20:].encode()})


def test_mlflows_error_answers_carry_no_stack_trace(caplog: pytest.LogCaptureFixture) -> None:
    """Any CSV body sent anonymously got MLflow's traceback: the install's paths and
    versions. The trace goes to the server's log; the client keeps the message."""
    bundle = _bundle()
    server = RecommendationServer(_mlflow_traceback, bundle.answer, Limits(), bundle)
    with caplog.at_level("INFO", logger="shoprec.serving.server"):
        answer = post(server, "user_id,k\nu1,abc\n", {"Content-Type": "text/csv"})
    assert answer.status_code == 400 and answer.json() == {
        "error_code": "BAD_REQUEST", "message": "Failed to parse input"}
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert "site-packages/mlflow" in caplog.text


def test_an_error_does_not_echo_a_huge_input(app) -> None:
    """A 300 KB field name or recent_items text came back whole in the 400."""
    server = RecommendationServer(_mlflow_app, _bundle().answer, Limits())  # 1 MB bodies
    for body in (records({"user_id": "u1", "x" * 300_000: 1}),
                 records({"user_id": "u1", "recent_items": {"i1": "y" * 300_000}})):
        answer = post(server, body)
        assert answer.status_code == 400 and len(answer.content) < 1_000, answer.text[:200]


def test_an_erased_shoppers_event_is_answered_as_anyones_and_not_kept(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /events answered {"recorded": 0, "ignored": 1} for an erased shopper and 1, 0
    for anyone else: any client could learn who had asked to be forgotten."""
    from shoprec.privacy import SUPPRESSIONS_ENV, SuppressionList
    from shoprec.serving.sessions import SessionStore
    from shoprec.serving.storefront import record_events

    monkeypatch.setenv(SUPPRESSIONS_ENV, str(tmp_path / "erase.jsonl"))
    SuppressionList().add("u1", "ops", "request")
    bundle = _bundle()
    bundle.sessions = SessionStore(tmp_path / "sessions.sqlite")
    answers = [record_events(bundle, json.dumps({"user_id": user, "item_id": "i3",
                                                 "event": "cart"}).encode())
               for user in ("u1", "u2", "nobody")]
    assert answers == [{"recorded": 1}] * 3
    assert json.dumps(answers[0]) == '{"recorded": 1}'  # as the server sends it (was a 500)
    assert bundle.sessions.recent(["u1", "u2"]) == {"u2": ["i3"]}
    # A bad event is refused for an erased shopper as for anyone (a 200 told them apart).
    for user in ("u1", "u2"):
        with pytest.raises(ValueError, match="event must be one of"):
            record_events(bundle, json.dumps({"user_id": user, "item_id": "i3",
                                              "event": "teleport"}).encode())
    # A product the model does not know is left out and named; the others are kept.
    answer = record_events(bundle, json.dumps([{"user_id": "u3", "item_id": "new-sku"},
                                               {"user_id": "u3", "item_id": "i4"}]).encode())
    assert answer == {"recorded": 1, "unknown_items": ["new-sku"]}
    json.dumps(answer)
    # An unknown product's event is checked all the same (an app's bad clock shows).
    with pytest.raises(ValueError, match="reads as milliseconds"):
        record_events(bundle, json.dumps({"user_id": "u3", "item_id": "new-sku",
                                          "timestamp": 1_765_000_000_000}).encode())
    with pytest.raises(ValueError, match="reads as nanoseconds: send epoch seconds \\(divide "
                       "by 1,000,000,000\\)"):
        record_events(bundle, json.dumps({"user_id": "u3", "item_id": "i4",
                                          "timestamp": 1_765_000_000_000_000_000}).encode())
    assert bundle.sessions.recent(["u3"]) == {"u3": ["i4"]}


def test_the_access_log_has_no_query_strings() -> None:
    """`serve -v` logged /api/history?user_id=15311&token=...: a raw id and the token."""
    import logging

    from shoprec_cli.app import _uvicorn_logging
    from uvicorn.logging import AccessFormatter

    from shoprec.serving.server import AccessLogWithoutQuery

    config = _uvicorn_logging()
    assert config["handlers"]["access"]["filters"] == ["no_query"]
    assert config["filters"]["no_query"]["()"].endswith("AccessLogWithoutQuery")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/history?user_id=15311&token=t0k",
                                "1.1", 200), None)
    assert AccessLogWithoutQuery().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s',
                           use_colors=False).format(record)
    assert line == '127.0.0.1:5 - "GET /api/history HTTP/1.1" 200 OK', line
