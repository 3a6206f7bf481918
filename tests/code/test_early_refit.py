"""The winner's refit beside the candidates: the board that names it, and the refit itself."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from shoprec.config import WeightingConfig
from shoprec.errors import FitStopped
from shoprec.features import item_frame
from shoprec.training import (
    CandidateResult,
    EarlyRefit,
    ValidationBoard,
    bundle_parts,
    fit_candidate,
    refit_bundle,
    refit_early,
    select_winner,
    train_and_evaluate,
    train_candidate_row,
)


def _posted(board: ValidationBoard, name: str, score: float, **params: float) -> None:
    board.post(name, dict(params), {"ndcg@10": score, "recall@10": 1.0 - score})


def test_the_winner_is_named_once_every_candidate_is_settled() -> None:
    board = ValidationBoard(["popularity", "mf", "vae"], "ndcg@10")
    _posted(board, "mf", 0.3, regularization=2.0)
    _posted(board, "popularity", 0.1)
    assert board.decided() is None
    assert board.wait(timeout=0.05) is None  # vae is still training
    _posted(board, "vae", 0.2, epochs=3)
    assert board.decided() == ("mf", {"regularization": 2.0})
    assert board.wait() == ("mf", {"regularization": 2.0})


def test_a_candidate_that_ended_without_figures_does_not_hold_the_winner_back() -> None:
    # Skipped (no ratings), or failed before its validation figures.
    board = ValidationBoard(["popularity", "mf-ratings", "ease"], "ndcg@10")
    _posted(board, "popularity", 0.1)
    board.ended("popularity")
    _posted(board, "ease", 0.2, regularization=200.0)
    assert board.decided() is None
    board.ended("mf-ratings")
    assert board.wait(timeout=1) == ("ease", {"regularization": 200.0})


def test_the_champion_s_recipe_and_unknown_metrics_are_not_candidates() -> None:
    board = ValidationBoard(["popularity"], "ndcg@10")
    _posted(board, "champion-recipe", 0.9)  # the gate's reference, never the winner
    board.post("popularity", {}, {"recall@10": 0.5})  # no primary metric: not a score
    board.ended("popularity")
    assert board.wait(timeout=1) is None  # settled, but nobody scored


def test_ties_go_to_the_first_in_the_leaderboard_as_in_the_selection() -> None:
    names = ["mf", "ease", "vae"]
    board = ValidationBoard(names, "ndcg@10")
    for name in reversed(names):  # posted in the other order
        _posted(board, name, 0.25 if name != "mf" else 0.1)
    rows = [CandidateResult(model=name, family="x", status="ok",
                            validation={"ndcg@10": 0.25 if name != "mf" else 0.1})
            for name in names]
    assert board.decided() == ("ease", {})
    assert select_winner(rows, "ndcg@10").model == "ease"


def test_closing_wakes_a_wait_that_cannot_be_decided() -> None:
    board = ValidationBoard(["mf", "ease"], "ndcg@10")
    _posted(board, "mf", 0.3)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(board.wait()))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # ease has neither posted nor ended
    board.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == [None]


def test_a_leader_whose_task_fails_drops_out_and_a_cancelled_board_names_none() -> None:
    board = ValidationBoard(["mf", "ease", "popularity"], "ndcg@10")
    _posted(board, "mf", 0.3, regularization=2.0)
    _posted(board, "ease", 0.2, regularization=200.0)
    _posted(board, "popularity", 0.1)
    chosen = board.wait(timeout=1)
    assert chosen == ("mf", {"regularization": 2.0}) and not board.superseded(chosen)
    board.ended("ease")  # its test refit went well: nothing changes
    assert board.decided() == chosen
    board.ended("mf", ok=False)  # its test refit failed: it cannot win the selection
    assert board.superseded(chosen)
    assert board.decided() == ("ease", {"regularization": 200.0})
    board.ended("ease", ok=False)
    assert board.decided() == ("popularity", {})
    board.cancel()  # the run failed
    assert board.decided() is None and board.wait(timeout=1) is None
    assert board.superseded(("popularity", {}))


def test_a_stop_ends_an_als_fit_between_sweeps(synthetic_prepared) -> None:
    matrix = synthetic_prepared.encoded.train
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(FitStopped, match="mf's fit was stopped"):
        fit_candidate("mf", {"regularization": 10.0, "iterations": 40}, matrix, None,
                      stop=stop)
    assert len(asked) == 3  # asked after each sweep, stopped after the third of 40
    model, _ = fit_candidate("mf", {"regularization": 10.0, "iterations": 3}, matrix, None,
                             stop=lambda: False)
    plain, _ = fit_candidate("mf", {"regularization": 10.0, "iterations": 3}, matrix, None)
    assert np.array_equal(model.item_factors_, plain.item_factors_)  # asking changes nothing


def _epochs_logged(records: list[logging.LogRecord], name: str) -> int:
    return sum(1 for r in records if r.getMessage().startswith(f"{name} epoch "))


def test_an_early_refit_moves_on_when_its_leader_fails_and_stops_when_cancelled(
        synthetic_prepared, caplog: pytest.LogCaptureFixture) -> None:
    """A network's refit is stopped at its next epoch: the next leader is refit instead,
    and a cancelled board (a failed run) leaves nothing running."""
    parts = bundle_parts(synthetic_prepared.data, WeightingConfig(), with_search=False)
    caplog.set_level(logging.INFO, logger="shoprec.models.epochs")
    long = {"epochs": 2000, "hidden": 16, "latent": 8}

    def started(board: ValidationBoard
                ) -> tuple[list[EarlyRefit | None], threading.Thread]:
        got: list[EarlyRefit | None] = []
        refitter = threading.Thread(target=lambda: got.append(refit_early(board, parts)))
        refitter.start()
        deadline = time.monotonic() + 120
        while _epochs_logged(caplog.records, "dae") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _epochs_logged(caplog.records, "dae") >= 2 and refitter.is_alive()
        return got, refitter

    board = ValidationBoard(["dae", "popularity"], "ndcg@10")
    board.post("dae", long, {"ndcg@10": 0.3})
    board.post("popularity", {}, {"ndcg@10": 0.1})
    board.ended("popularity")
    got, refitter = started(board)
    board.ended("dae", ok=False)  # dae's test refit failed: popularity wins the selection
    board.close()
    refitter.join(timeout=120)
    assert not refitter.is_alive()
    assert got[0] is not None and got[0].refits("popularity", {})
    assert _epochs_logged(caplog.records, "dae") < 100  # stopped, not run to 2,000

    caplog.clear()
    board = ValidationBoard(["dae"], "ndcg@10")
    board.post("dae", long, {"ndcg@10": 0.3})
    got, refitter = started(board)
    board.cancel()
    refitter.join(timeout=120)
    assert not refitter.is_alive() and got == [None]
    assert _epochs_logged(caplog.records, "dae") < 100


def _refit_in_thread(board: ValidationBoard, parts
                     ) -> tuple[list[EarlyRefit | BaseException | None], threading.Thread]:
    got: list[EarlyRefit | BaseException | None] = []

    def run() -> None:
        try:
            got.append(refit_early(board, parts))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            got.append(exc)

    refitter = threading.Thread(target=run)
    refitter.start()
    return got, refitter


@pytest.mark.parametrize("outcome", ["ended", "failed"])
def test_a_refit_that_ended_before_its_candidate_failed_is_dropped_for_the_next(
        synthetic_prepared, monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    """ease's early refit (one solve) ends, or fails, before ease's own task fails."""
    import shoprec.training as training
    from shoprec.errors import ModelFitError

    parts = bundle_parts(synthetic_prepared.data, WeightingConfig(), with_search=False)
    real_fit, done = training.fit_candidate, threading.Event()

    def watched(name: str, *args, stop=None, **kwargs):
        try:
            if name == "ease" and stop is not None and outcome == "failed":
                raise ModelFitError("ease diverged")  # as its test refit will
            return real_fit(name, *args, stop=stop, **kwargs)
        finally:
            if name == "ease":
                done.set()

    monkeypatch.setattr(training, "fit_candidate", watched)
    for ease_ok in (False, True):
        done.clear()
        board = ValidationBoard(["ease", "popularity"], "ndcg@10")
        board.post("ease", {"regularization": 200.0}, {"ndcg@10": 0.3})
        board.post("popularity", {}, {"ndcg@10": 0.1})
        board.ended("popularity")
        got, refitter = _refit_in_thread(board, parts)
        assert done.wait(60)
        assert refitter.is_alive()  # held until every candidate's task has ended
        board.ended("ease", ok=ease_ok)
        board.close()
        refitter.join(timeout=60)
        assert not refitter.is_alive()
        if not ease_ok:  # popularity won the selection: its refit takes ease's place
            assert isinstance(got[0], EarlyRefit) and got[0].refits("popularity", {})
        elif outcome == "ended":
            assert isinstance(got[0], EarlyRefit) and got[0].refits("ease", {
                "regularization": 200.0})
        else:  # ease still won: its refit's failure reaches the flow, which refits it
            assert isinstance(got[0], ModelFitError)


def test_a_candidate_task_tells_the_board_whether_its_row_can_win(synthetic_prepared) -> None:
    from shoprec_tasks.training import train_candidate

    encoded = synthetic_prepared.encoded
    assert not encoded.has_ratings  # mf-ratings is skipped on shop events
    board = ValidationBoard(["popularity", "mf-ratings", "mf"], "ndcg@10")
    row = train_candidate.fn("popularity", {}, encoded, None, [10], board=board)
    assert row.status == "ok"
    skipped = train_candidate.fn("mf-ratings", {}, encoded, None, [10], board=board)
    assert skipped.status == "skipped"
    _posted(board, "mf", 0.99)  # it leads on validation, then its test refit fails
    with pytest.raises(ValueError, match="weighting"):
        train_candidate.fn("mf", {"weighting": "bogus"}, encoded, None, [10], board=board)
    assert board.decided() == ("popularity", row.params)


def test_a_candidate_posts_its_row_s_values_before_its_test_refit(
        synthetic_prepared, monkeypatch: pytest.MonkeyPatch) -> None:
    import shoprec.training as training

    encoded = synthetic_prepared.encoded
    fits: list[int] = []
    heard: list[tuple[str, dict, dict, int]] = []
    fit = training.fit_candidate

    def counted(*args, **kwargs):
        fits.append(1)
        return fit(*args, **kwargs)

    def hear(name: str, params: dict, validation: dict) -> None:
        heard.append((name, params, validation, len(fits)))

    monkeypatch.setattr(training, "fit_candidate", counted)
    result, _ = train_and_evaluate("ease", {}, encoded, None, [10], hear)
    # Heard once, after the fit on training and before the refit for the test figures.
    assert heard == [("ease", result.params, result.validation, 1)] and len(fits) == 2
    # train_candidate_row passes it on.
    board = ValidationBoard(["popularity"], "ndcg@10")
    row = train_candidate_row("popularity", {}, encoded, None, [10], board.post)
    board.ended("popularity")
    assert board.wait(timeout=1) == ("popularity", row.params)


def test_an_early_refit_bundles_as_the_refit_after_the_selection(synthetic_prepared) -> None:
    data = synthetic_prepared.data
    parts = bundle_parts(data, WeightingConfig())
    params = {"regularization": 200.0}
    board = ValidationBoard(["ease", "popularity"], "ndcg@10")
    got: list[EarlyRefit | None] = []
    refitter = threading.Thread(target=lambda: got.append(refit_early(board, parts)))
    refitter.start()
    board.post("ease", params, {"ndcg@10": 0.2})
    board.post("popularity", {}, {"ndcg@10": 0.1})
    board.close()  # every candidate's task has ended
    refitter.join(timeout=120)
    early = got[0]
    assert early is not None and early.refits("ease", params) and early.parts is parts
    now = refit_bundle("ease", params, data, WeightingConfig(), {"k": 1}, parts=parts)
    ahead = refit_bundle("ease", params, data, WeightingConfig(), {"k": 1}, fitted=early)
    assert ahead.model is early.model
    assert np.array_equal(ahead.model.weights_, now.model.weights_)
    rows = parts.matrix[:20]
    assert np.array_equal(ahead.model.score(rows), now.model.score(rows))
    assert ahead.meta["refit_early"] and not now.meta["refit_early"]
    assert {k: v for k, v in ahead.meta.items() if k not in ("refit_early", "refit_seconds")} \
        == {k: v for k, v in now.meta.items() if k not in ("refit_early", "refit_seconds")}
    # Another candidate's refit, or the same with other values, never stands in.
    for name, other in (("popularity", {}), ("ease", {"regularization": 50.0})):
        with pytest.raises(ValueError, match="early refit"):
            refit_bundle(name, other, data, WeightingConfig(), {}, fitted=early)


def test_no_early_refit_when_the_board_closes_first(synthetic_prepared) -> None:
    parts = bundle_parts(synthetic_prepared.data, WeightingConfig(), with_search=False)
    board = ValidationBoard(["ease"], "ndcg@10")
    board.close()
    assert refit_early(board, parts) is None


def test_the_flow_takes_the_early_refit_only_when_it_is_the_winner_s(synthetic_prepared) -> None:
    from prefect.exceptions import UnfinishedRun
    from shoprec_flows.training import early_refit

    class Done:
        """A task's future: its result, or what ``result`` raises."""

        def __init__(self, value: object = None, raises: Exception | None = None) -> None:
            self.value, self.raises = value, raises

        def result(self, raise_on_failure: bool = True) -> object:
            if self.raises is not None:
                raise self.raises
            return self.value

    encoded = synthetic_prepared.encoded
    items = item_frame(synthetic_prepared.data.items, encoded.items)
    parts = bundle_parts(synthetic_prepared.data, WeightingConfig(), with_search=False)
    row = train_candidate_row("popularity", {}, encoded, items, [10])
    model, seconds = fit_candidate("popularity", row.params, parts.matrix, parts.frame)
    made = EarlyRefit("popularity", row.params, model, seconds, parts)
    board = ValidationBoard(["popularity", "ease"], "ndcg@10")
    board.post("popularity", row.params, row.validation)
    board.ended("ease")  # failed before its validation figures
    assert early_refit(Done(made), board, row) is made
    assert early_refit(None, None, row) is None  # none was started (Dask, a blend)
    assert early_refit(Done(None), board, row) is None  # the winner may not be refit early
    assert early_refit(Done(RuntimeError("out of memory")), board, row) is None
    # Never run: the bundle's parts it waits for failed, and Prefect left it pending.
    assert early_refit(Done(raises=UnfinishedRun("pending")), board, row) is None
    # The validation leader's test refit failed: the board names the next, whose refit
    # the early task moved on to.
    leader = ValidationBoard(["ease", "popularity"], "ndcg@10")
    leader.post("ease", {"regularization": 200.0}, {"ndcg@10": 0.9})
    leader.post("popularity", row.params, row.validation)
    leader.ended("ease", ok=False)
    assert early_refit(Done(made), leader, row) is made
    # Should the board still name another than the winner, that refit is stopped (the
    # board cancelled), not waited for.
    other_leader = ValidationBoard(["ease", "popularity"], "ndcg@10")
    other_leader.post("ease", {"regularization": 200.0}, {"ndcg@10": 0.9})
    other_leader.post("popularity", row.params, row.validation)
    assert early_refit(Done(raises=AssertionError("waited for")), other_leader, row) is None
    assert other_leader.decided() is None
    other = EarlyRefit("ease", {"regularization": 200.0}, model, seconds, parts)
    assert early_refit(Done(other), board, row) is None


def test_a_board_only_where_the_candidates_can_post_to_it_and_no_blend_follows() -> None:
    from shoprec_flows.runners import early_refit_board

    from shoprec.config import TrainingConfig
    from shoprec.registry.recipe import Recipe
    from shoprec.training import CandidateJob

    recipe = Recipe("ease", {"regularization": 200.0}, {}, None, "f" * 64, "c")
    jobs = [CandidateJob("mf", "mf", {}), CandidateJob("ease", "ease", {}),
            CandidateJob("vae", "vae", {}), CandidateJob("champion-recipe", "ease", {}, recipe)]
    board = early_refit_board(jobs, TrainingConfig())
    assert board is not None
    # The champion's recipe is not waited for: the three candidates settle the board.
    board.post("mf", {}, {"ndcg@10": 0.1})
    board.post("ease", {}, {"ndcg@10": 0.2})
    assert board.decided() is None
    board.post("vae", {}, {"ndcg@10": 0.15})
    assert board.decided() == ("ease", {})
    assert all(board.may_refit_early(name) for name in ("mf", "ease", "vae"))
    # Dask workers' candidates cannot post to this process; a blend may win after them.
    assert early_refit_board(jobs, TrainingConfig(task_runner="dask")) is None
    assert early_refit_board(jobs, TrainingConfig(blend=2)) is None
    # With networks side by side limited, a network winner is not one more beside them.
    slots = early_refit_board(jobs, TrainingConfig(network_slots=1))
    assert slots is not None
    assert slots.may_refit_early("ease") and not slots.may_refit_early("vae")


def test_a_winner_that_may_not_be_refit_early_is_left_to_the_selection(
        synthetic_prepared) -> None:
    parts = bundle_parts(synthetic_prepared.data, WeightingConfig(), with_search=False)
    board = ValidationBoard(["popularity", "vae"], "ndcg@10", early={"popularity"})
    board.post("vae", {"epochs": 2}, {"ndcg@10": 0.3})
    board.post("popularity", {}, {"ndcg@10": 0.1})
    assert board.decided() == ("vae", {"epochs": 2})
    board.close()
    assert refit_early(board, parts) is None  # no network trained here
    # Until the candidates have all ended the leader may still fail; the next is refit.
    board = ValidationBoard(["popularity", "vae"], "ndcg@10", early={"popularity"})
    board.post("vae", {"epochs": 2}, {"ndcg@10": 0.3})
    board.post("popularity", {}, {"ndcg@10": 0.1})
    got: list[EarlyRefit | None] = []
    refitter = threading.Thread(target=lambda: got.append(refit_early(board, parts)))
    refitter.start()
    time.sleep(0.2)  # it waits for the candidates' end, vae named but not refit here
    assert refitter.is_alive()
    board.ended("vae", ok=False)
    board.close()
    refitter.join(timeout=60)
    assert got[0] is not None and got[0].refits("popularity", {})
