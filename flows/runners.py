"""Where the training flow's candidates run: the ``shoprec-candidates`` flow and its runner.

The candidates train as tasks of a nested flow whose task runner is chosen from the run's
configuration with ``with_options``: threads in the flow's process, or a Dask cluster
through prefect-dask (a local cluster of worker processes, or an existing scheduler).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure

from shoprec.config import TrainingConfig
from shoprec.threads import limit_threads
from shoprec.training import (
    CandidateJob,
    CandidateResult,
    ValidationBoard,
    job_result,
    networks_at_once,
    start_after,
    submission_order,
)

logger = logging.getLogger(__name__)


class CandidateThreads(ThreadPoolTaskRunner):
    """A thread pool that a stopped flow does not wait for.

    Prefect's thread pool joins its threads on exit, and a candidate can train for minutes:
    on SIGTERM or Ctrl-C the flow must end within seconds, so the threads are left to end
    with the process. A normal exit still waits for every task.
    """

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and self._executor is not None:
            for event in self._cancel_events.values():
                event.set()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


class TrainingInputs:
    """The training matrices and item table, handed to the candidates flow by reference.

    Prefect records every flow parameter as JSON; a value it cannot encode is stored as a
    placeholder. Without ``__dict__`` (slots) this object is refused at once, instead of
    the matrices being deep-copied on their way to that refusal. And it pickles empty (the
    flow run's context, parameters included, is shipped with every Dask task).
    """

    __slots__ = ("board", "encoded", "items")

    def __init__(self, encoded: Any, items: Any, board: ValidationBoard | None = None) -> None:
        self.encoded = encoded
        self.items = items
        self.board = board  # the candidates' validation figures, as they come (threads only)

    def __reduce__(self) -> tuple[type[TrainingInputs], tuple[None, None, None]]:
        # The candidates flow's parameters travel with every task's context to Dask workers,
        # which read the scattered copies instead: pickled, this holder is empty.
        return TrainingInputs, (None, None, None)


def parallel_candidates(config: TrainingConfig, extra: int = 0) -> int:
    """How many candidates (and ``extra`` other training jobs) train at the same time."""
    slots = config.dask_workers if config.task_runner == "dask" else config.max_workers
    return max(1, min(slots, len(config.models) + extra))


def threads_per_candidate(config: TrainingConfig, extra: int = 0) -> int:
    """Each candidate's share of the cores.

    Of this machine, or of a local cluster's, with ``extra`` training jobs beside the
    candidates (the champion's recipe).
    """
    return max(1, (os.cpu_count() or 1) // parallel_candidates(config, extra))


def process_threads(config: TrainingConfig, extra: int = 0) -> int:
    """Cores of the process a candidate trains in.

    All of this machine's with threads; a Dask worker's share on a local cluster (one task
    per worker).
    """
    if config.task_runner == "dask":
        return threads_per_candidate(config, extra)
    return os.cpu_count() or 1


def threads_per_trial(config: TrainingConfig) -> int:
    """Each search trial's share of the cores (``tune_parallel`` trials at a time)."""
    return max(1, (os.cpu_count() or 1) // config.tune_parallel)


def share_network_pools(jobs: list[CandidateJob], config: TrainingConfig,
                        extra: int = 0) -> None:
    """Size TensorFlow's pools for the networks among ``jobs`` that train side by side.

    With threads, the networks share the flow's process and its pools: each op gets its
    network's share of the cores (:func:`~shoprec.models.autoencoder.share_tensorflow_pools`).
    A single network keeps every core for its ops, and Dask workers size their own. A
    TensorFlow that cannot load is logged, not raised: the networks fail as candidates.
    """
    networks = networks_at_once(jobs, config.network_slots)
    if config.task_runner == "threads" and networks > 1:
        from shoprec.models.autoencoder import share_tensorflow_pools

        try:
            share_tensorflow_pools(networks, process_threads(config, extra))
        except Exception as exc:  # noqa: BLE001 - any failure of TensorFlow to load or start
            # The networks then fail one by one as candidates, each with this error in the
            # leaderboard, and the other families still train: the run must not end here.
            logger.warning("TensorFlow could not start to size its thread pools (%r); the "
                           "networks will fail as candidates", exc)


def thread_workers(config: TrainingConfig, extra: int = 0, waiting: int = 0) -> int:
    """Threads of the candidates' pool.

    ``waiting`` jobs wait for another job in their thread (Prefect resolves ``wait_for``
    inside the worker): each gets a thread of its own, so the candidates that do not wait
    still train as many at a time as configured.
    """
    return parallel_candidates(config, extra) + waiting


def extra_threads(jobs: list[CandidateJob], config: TrainingConfig,
                  after: dict[str, str]) -> int:
    """Threads the candidates' pool needs beyond :func:`parallel_candidates`.

    One per job that waits for another (it holds its thread while waiting). With the networks
    all at once (no slot limit), enough for the networks to leave a thread to the others: the
    networks go first, and a network champion's recipe would otherwise fill the pool.
    """
    if after:
        return len(after)
    networks = sum(job.process_pools for job in jobs)
    return max(0, networks + 1 - config.max_workers)


def task_runner_for(config: TrainingConfig, extra: int = 0, waiting: int = 0) -> TaskRunner:
    """The task runner the configuration asks for, sized for the candidates."""
    if config.task_runner != "dask":
        return CandidateThreads(max_workers=thread_workers(config, extra, waiting))
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    threads = str(threads_per_candidate(config, extra))
    # One task per worker process at a time; BLAS and OpenMP pools sized to the worker's
    # share of the cores.
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": config.dask_workers, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None,
        "env": {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads}})


def _shared(value: Any) -> Any:
    """``value`` as the tasks should receive it.

    On Dask it is scattered to every worker once, so each task gets a reference instead of
    its own copy of the matrices; with threads it is shared in memory as it is.
    """
    context = FlowRunContext.get()
    client = getattr(context.task_runner, "client", None) if context else None
    return value if client is None else client.scatter(value, broadcast=True)


@flow(name="shoprec-candidates", task_runner=CandidateThreads(max_workers=4),
      validate_parameters=False)
def train_candidates(jobs: list[CandidateJob], inputs: TrainingInputs, ks: list[int],
                     threads: int, after: dict[str, str] | None = None,
                     curve_k: int | None = None) -> list[CandidateResult]:
    """Train every job as its own task, all submitted at once; return the rows.

    Rows come back in the jobs' order; a job that failed, or was lost with its worker,
    gets a failed row. ``threads`` caps each job's BLAS and OpenMP pools. A job named in
    ``after`` starts once the job it names has ended, failed or not (Prefect's ``wait_for``:
    the dependency shows in the run's graph). ``curve_k``: the K of the candidates'
    accuracy/novelty curve (the primary metric's).
    """
    from shoprec_tasks.training import train_candidate, train_champion_recipe

    after = after or {}
    with limit_threads(threads):
        common = {"encoded": _shared(inputs.encoded), "items": _shared(inputs.items),
                  "ks": ks, "threads": threads, "curve_k": curve_k}
        futures: dict[str, PrefectFuture[CandidateResult]] = {}
        for job in submission_order(jobs):
            # submission_order puts every job after the one it waits for.
            wait_for = [allow_failure(futures[after[job.label]])] if job.label in after else None
            if job.recipe is not None:
                futures[job.label] = train_champion_recipe.submit(
                    recipe=job.recipe, wait_for=wait_for, **common)
            else:
                futures[job.label] = train_candidate.submit(
                    name=job.candidate, params=job.params, wait_for=wait_for,
                    board=inputs.board, **common)
        return [job_result(job, _wait(futures[job.label])) for job in jobs]


def early_refit_board(jobs: list[CandidateJob], config: TrainingConfig) -> ValidationBoard | None:
    """A board for the winner's early refit, where one can start; else ``None``.

    With threads only: Dask workers' candidates cannot post to this process's board. And
    not with a blend, which trains after the candidates and may win. With
    ``network_slots`` (networks side by side limited, for memory) a network winner is
    refit after the selection, as before, not as one more network beside the others.
    """
    if config.task_runner != "threads" or config.blend:
        return None
    candidates = [job for job in jobs if job.recipe is None]
    early = {job.label for job in candidates
             if config.network_slots is None or not job.process_pools}
    return ValidationBoard([job.label for job in candidates], config.primary_metric, early)


def run_candidates(jobs: list[CandidateJob], encoded: Any, items: Any,
                   config: TrainingConfig, threads: int,
                   board: ValidationBoard | None = None) -> list[CandidateResult]:
    """Run the candidates flow on the task runner ``config`` asks for.

    ``board`` (threads only) hears each candidate's validation figures as they come; the
    caller closes it.
    """
    extra = sum(job.recipe is not None for job in jobs)
    # Dask workers are processes of their own: their networks do not share thread pools.
    slots = config.network_slots if config.task_runner == "threads" else None
    after = start_after(jobs, slots)
    on_runner = train_candidates.with_options(
        task_runner=task_runner_for(config, extra, waiting=extra_threads(jobs, config, after)))
    return on_runner(jobs, TrainingInputs(encoded, items, board), config.ks, threads, after,
                     config.primary_k)


def _wait(future: Any) -> Any:
    """A task's result, or the exception that lost it (a dead Dask worker raises here)."""
    try:
        return future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - recorded as the candidate's failure
        return exc
