"""The service layer a person can see: live events, cross-selling, and the storefront page
driven in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from shoprec.config import DataConfig, SplitConfig, TrainingConfig
from tests.code.test_operations import _free_port, _post, _stop, _wait_ready

#: The access token the test's server is given (SHOPREC_SERVE_TOKEN), as the link carries.
TOKEN = "storefront-test-token"


def _event(server: _Server, payload: dict | list) -> tuple[int, dict | str]:
    """POST ``payload`` to the server's /events, with its token, as the page does."""
    return _post(f"{server.url}/events", payload, {"X-Shoprec-Token": TOKEN})

ROOT = Path(__file__).resolve().parents[2]
NAME = "storefront-model"
#: Screenshots of each step of the browser test (a test artifact; runs/ is not committed).
SHOTS = ROOT / "runs" / "test-artifacts" / "storefront"


@pytest.fixture(scope="module")
def storefront(prefect_api: str, mlflow_store: str, synthetic_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An ease champion on the planted data, served on a loopback port with sessions."""
    from shoprec_flows.training import training_pipeline

    out = tmp_path_factory.mktemp("storefront")
    training_pipeline(
        data=DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                        items=str(synthetic_dir / "items.parquet")),
        split=SplitConfig(method="temporal", test_days=20, validation_days=20),
        training=TrainingConfig(registered_model_name=NAME, models=["popularity", "ease"]),
        output_dir=str(out / "train"))
    sessions = out / "sessions.sqlite"
    server = _Server(sessions)
    yield {"server": server, "sessions": sessions, "synthetic": synthetic_dir}
    server.stop()


class _Server:
    """``shoprec serve`` in a subprocess; restartable on the same session file."""

    def __init__(self, sessions: Path) -> None:
        self.sessions = sessions
        self.start()

    def start(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shoprec_cli", "serve", "--port", str(self.port),
             "--registered-model-name", NAME, "--sessions", str(self.sessions)],
            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env={**os.environ, "SHOPREC_SERVE_TOKEN": TOKEN})
        _wait_ready(self.url, self.process)

    def stop(self) -> None:
        _stop(self.process)

    def get(self, path: str, token: str | None = TOKEN) -> dict:
        request = urllib.request.Request(f"{self.url}{path}",
                                         headers={"X-Shoprec-Token": token} if token else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def ask(self, record: dict) -> dict:
        return self.ask_many([record])[0]

    def ask_many(self, records: list[dict]) -> list[dict]:
        status, answer = _post(f"{self.url}/invocations", {"dataframe_records": records},
                               {"X-Shoprec-Token": TOKEN})
        assert status == 200, answer
        return answer["predictions"]


def test_events_reach_the_next_answer_and_survive_a_restart(storefront: dict) -> None:
    server = storefront["server"]
    interactions = pd.read_parquet(storefront["synthetic"] / "interactions.parquet")
    user = str(interactions["user_id"].iloc[0])
    before = server.ask({"user_id": user, "k": 10})
    owned = set(interactions.loc[interactions["user_id"] == user, "item_id"].astype(str))
    clicks = [i for i in before["item_ids"][:3]]
    for item in clicks:
        status, answer = _event(server, {"user_id": user, "item_id": item, "event": "cart"})
        assert status == 200 and answer == {"recorded": 1}, answer
    # The next request carries only the user id, and reflects what they just did.
    after = server.ask({"user_id": user, "k": 10})
    assert after["item_ids"] != before["item_ids"]
    assert not set(clicks) & set(after["item_ids"])  # already in their basket
    history = server.get(f"/api/history?user_id={user}")
    assert [s["item_id"] for s in history["session"]] == clicks
    assert {i["item_id"] for i in history["items"]} <= owned
    # A restarted server keeps the sessions (SQLite file).
    server.stop()
    server.start()
    assert server.ask({"user_id": user, "k": 10}) == after
    # Bad events are refused with the reason.
    status, message = _event(server, {"user_id": user, "item_id": clicks[0],
                                                      "event": "teleport"})
    assert status == 400 and "event must be one of" in message
    status, message = _event(server, {"user": user})
    assert status == 400 and "unknown event field(s) user" in message
    # A product added since training is left out and said, the rest kept (a mobile
    # reader's: one new product failed a batch of clicks, and every one was lost).
    status, answer = _event(server, [{"user_id": user, "item_id": "no-such"},
                                     {"user_id": "new-shopper", "item_id": clicks[1]}])
    assert status == 200 and answer == {"recorded": 1, "unknown_items": ["no-such"]}
    assert [s["item_id"] for s in server.get("/api/history?user_id=new-shopper")["session"]] \
        == [clicks[1]]
    status, message = _event(server, {"user_id": user, "item_id": clicks[0],
                                      "timestamp": 1_765_000_000_000})
    assert status == 400 and "reads as milliseconds: send epoch seconds" in message
    # A front-end developer's: 0, false and "" were recorded as views; a list as an
    # unknown item.
    for wrong in (0, False, ""):
        status, message = _event(server, {"user_id": user, "item_id": clicks[0],
                                          "event": wrong})
        assert status == 400 and "event must be one of" in message, wrong
    status, message = _event(server, {"user_id": user, "item_id": [clicks[0]]})
    assert status == 400 and "item_id must be text or a finite number" in message
    # A batch is all or nothing: one bad event records none of them.
    status, _ = _event(server, [
        {"user_id": user, "item_id": clicks[0]},
        {"user_id": user, "item_id": clicks[0], "timestamp": "yesterday"}])
    assert status == 400
    assert [s["item_id"] for s in server.get(f"/api/history?user_id={user}")["session"]] \
        == clicks
    # JSON only: another site's form (text/plain) cannot post events.
    request = urllib.request.Request(f"{server.url}/events", data=b'{"user_id": "x"}',
                                     headers={"Content-Type": "text/plain",
                                              "X-Shoprec-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 415
    # Shopper data is on because the server listens on loopback: a request addressed to
    # another host name (a proxy, a rebound DNS name) is refused.
    request = urllib.request.Request(f"{server.url}/api/shoppers?q=U",
                                     headers={"Host": "shop.example.com"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    # Found by a second reader: a loopback name with more after it passed the check.
    for forged in ("[::1].evil.example", "localhost:evil", "127.0.0.1.evil.example:80"):
        request = urllib.request.Request(f"{server.url}/api/shoppers?q=U",
                                         headers={"Host": forged, "X-Shoprec-Token": TOKEN})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403, forged


def test_shopper_data_needs_the_servers_token(storefront: dict) -> None:
    """Found by a second reader: nginx's plain proxy_pass reaches a loopback server from
    127.0.0.1 with a loopback Host, and handed every shopper's purchases to the internet.
    Shopper data now goes only to requests carrying the token of the printed link."""
    server = storefront["server"]
    interactions = pd.read_parquet(storefront["synthetic"] / "interactions.parquet")
    user = str(interactions["user_id"].iloc[0])
    for path in (f"/api/history?user_id={user}", "/api/shoppers?q=U"):
        for token in (None, "a-guess"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                server.get(path, token=token)
            assert refused.value.code == 403, path
            assert "access token" in refused.value.read().decode()
    assert server.get("/api/info", token=None)["explanations"] is False
    assert server.get("/api/info", token=None)["sessions"] is False  # the page keeps clicks
    assert server.get("/api/info")["explanations"] is True
    status, message = _post(f"{server.url}/invocations", {"dataframe_records": [
        {"user_id": user, "k": 3, "explain": True}]})
    assert status == 400 and "access token" in str(message)
    # Through MLflow's handler too.
    status, message = _post(f"{server.url}/invocations", {"dataframe_records": [
        {"user_id": user, "k": 3, "explain": True}], "params": {}})
    assert status == 400 and "access token" in str(message), message
    # Recommendations themselves need no token; the token in the link's query works too.
    status, plain = _post(f"{server.url}/invocations", {"dataframe_records": [
        {"user_id": user, "k": 3}]})
    assert status == 200
    status, explained = _post(f"{server.url}/invocations?token={TOKEN}", {
        "dataframe_records": [{"user_id": user, "k": 3, "explain": True}]})
    assert status == 200 and explained["predictions"][0]["explanations"]
    # Nor may a proxy's client write into a shopper's live session (a second reader's point).
    status, message = _post(f"{server.url}/events", {"user_id": user, "item_id": "x"})
    assert status == 403 and "access token" in str(message)
    # MLflow's own answers carry the security headers too.
    with urllib.request.urlopen(f"{server.url}/version", timeout=30) as response:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    # Every answer names the model and version that gave it (a click is put down to an
    # A/B test's arm by it).
    request = urllib.request.Request(
        f"{server.url}/invocations", method="POST", headers={
            "Content-Type": "application/json"},
        data=json.dumps({"dataframe_records": [{"user_id": user, "k": 3}]}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        info = server.get("/api/info")
        assert response.headers["X-Shoprec-Model"] == f"{NAME}/{info['version']}"


def test_cross_selling_says_where_it_comes_from(storefront: dict) -> None:
    server = storefront["server"]
    info = server.get("/api/info")
    assert info["name"] == NAME and info["family"] == "autoencoder" and info["model"] == "ease"
    assert info["version"] and info["registered_at"] and info["explanations"] is True
    # The alias is the one it had when the server started, and says when that was.
    assert info["alias"] == "champion" and pd.Timestamp(info["started_at"]).tzinfo
    # The served data's end, beside the registration (a kept champion's data ages).
    data = pd.read_parquet(storefront["synthetic"] / "interactions.parquet")
    assert pd.to_datetime(info["data_cutoff"], utc=True) == pd.to_datetime(
        data["timestamp"], utc=True).max()
    interactions = pd.read_parquet(storefront["synthetic"] / "interactions.parquet")
    item = str(interactions["item_id"].value_counts().index[0])
    similar = server.ask({"item_id": item, "k": 5})
    assert similar["source"] == "similar:ease" and len(similar["item_ids"]) == 5
    assert item not in similar["item_ids"]
    # A product added since the model was trained: that record answers empty, the others
    # as usual (one such record failed the whole request with a 400).
    answers = server.ask_many([{"item_id": "no-such-item", "k": 5}, {"item_id": item, "k": 5}])
    assert answers[0]["source"] == "unknown_item" and answers[0]["item_ids"] == []
    assert answers[1]["item_ids"] == similar["item_ids"]
    user = str(interactions["user_id"].iloc[0])
    found = server.get(f"/api/shoppers?q={user[:2]}")["shoppers"]
    assert found == sorted(found) and 0 < len(found) <= 20
    assert all(f.startswith(user[:2]) for f in found)
    assert server.get(f"/api/shoppers?q={user}")["shoppers"][0] == user


def test_the_storefront_page_in_a_real_browser(storefront: dict) -> None:
    if shutil.which("chromium") is None:
        message = "Debian's chromium is missing: `make browser` installs it"
        if os.environ.get("SHOPREC_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    server = storefront["server"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    interactions = pd.read_parquet(storefront["synthetic"] / "interactions.parquet")
    user = str(interactions["user_id"].iloc[-1])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server.url + f"/#token={TOKEN}")  # the link `shoprec serve` prints
            expect(page.locator("#model")).to_contain_text(f"{NAME}@champion")
            page.screenshot(path=str(SHOTS / "1-opened.png"))
            # Pick a shopper with the keyboard only: type, then Enter submits the form.
            page.locator("#shopper-input").fill(user)
            page.keyboard.press("Enter")
            recs = page.locator("#recs li")
            expect(recs).to_have_count(8)
            expect(page.locator("#recs-status")).to_contain_text("(model)")
            expect(page.locator("#recs .why").first).to_contain_text("because of")
            before = recs.locator(".title").all_inner_texts()
            page.screenshot(path=str(SHOTS / "2-shopper.png"), full_page=True)
            # Add the first recommendation to the basket: the list changes, no retraining.
            recs.first.get_by_role("button", name="Add").click()
            expect(page.locator("#shopper-status")).to_contain_text("added")
            page.wait_for_function(
                "titles => [...document.querySelectorAll('#recs .title')]"
                ".map(n => n.textContent).join('|') !== titles.join('|')", arg=before)
            expect(page.locator("#history")).to_contain_text("(just now)")
            page.screenshot(path=str(SHOTS / "3-basket.png"), full_page=True)
            # Search, personalised for the shopper.
            page.locator("#search-input").fill(before[0].split()[-1].lower())
            page.keyboard.press("Enter")
            expect(page.locator("#results li").first).to_be_visible()
            page.screenshot(path=str(SHOTS / "4-search.png"), full_page=True)
            # Open a product: what goes with it (cross-sell).
            page.locator("#results li").first.get_by_role("button", name="View").click()
            expect(page.locator("#similar li")).to_have_count(6)
            page.screenshot(path=str(SHOTS / "5-product.png"), full_page=True)
            # A narrow screen: the sections stack, nothing overflows sideways.
            page.set_viewport_size({"width": 390, "height": 844})
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width
            page.screenshot(path=str(SHOTS / "6-narrow.png"), full_page=True)
            # Everything came from this server: no CDN, no external asset.
            assert requested and all(url.startswith(server.url) for url in requested), \
                [url for url in requested if not url.startswith(server.url)]
        finally:
            browser.close()
