"""Where the training flow runs its candidate tasks.

Threads in the flow's process, or a Dask cluster through prefect-dask (a local cluster of worker
processes, or an existing scheduler).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from threadpoolctl import threadpool_limits

from shoprec.config import TrainingConfig
from shoprec.training import CandidateJob, CandidateResult, job_result, submission_order


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


@contextmanager
def candidate_runner(config: TrainingConfig, extra: int = 0) -> Iterator[tuple[TaskRunner,
                                                               Callable[[Any], Any]]]:
    """A started task runner for the candidates, and a way to share inputs.

    The second item ships a training input to the workers once.

    With Dask, inputs are scattered to every worker before the tasks are submitted, so each
    task receives a reference instead of a fresh copy of the matrices; with threads they
    are shared in memory as they are.
    """
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            runner = DaskTaskRunner(address=config.dask_address)
        else:
            threads = str(threads_per_candidate(config, extra))
            # One task per worker process at a time; BLAS and OpenMP pools sized to the
            # worker's share of the cores.
            runner = DaskTaskRunner(cluster_kwargs={
                "n_workers": config.dask_workers, "threads_per_worker": 1,
                "processes": True, "dashboard_address": None,
                "env": {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                        "MKL_NUM_THREADS": threads}})
        with runner:
            yield runner, lambda value: runner.client.scatter(value, broadcast=True)
    else:
        runner = ThreadPoolTaskRunner(max_workers=parallel_candidates(config, extra))
        runner.__enter__()
        try:
            yield runner, lambda value: value
        except BaseException:
            # Stopped (SIGTERM, Ctrl-C) or failed: do not wait for candidates still
            # training, which can take minutes; their threads end with the process. The
            # runner's own exit would join them.
            executor = getattr(runner, "_executor", None)
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
                runner._executor = None  # noqa: SLF001 - nothing left for exit to join
            runner.__exit__(*sys.exc_info())
            raise
        runner.__exit__(None, None, None)


def run_candidates(jobs: list[CandidateJob], encoded: Any, items: Any,
                   config: TrainingConfig, threads: int) -> list[CandidateResult]:
    """Run every training job as its own task; return the rows.

    All jobs are submitted at once; their rows come back in leaderboard order, and a job
    that failed, or was lost with its worker, gets a failed row.
    """
    from shoprec_tasks.training import train_candidate, train_champion_recipe

    extra = sum(job.recipe is not None for job in jobs)
    futures = {}
    with threadpool_limits(threads), candidate_runner(config, extra) as (runner, share):
        inputs = {"encoded": share(encoded), "items": share(items), "ks": config.ks,
                  "threads": threads}
        for job in submission_order(jobs):
            if job.recipe is not None:
                futures[job.label] = runner.submit(train_champion_recipe,
                                                   {**inputs, "recipe": job.recipe})
            else:
                futures[job.label] = runner.submit(train_candidate, {
                    **inputs, "name": job.candidate, "params": job.params})
        return [job_result(job, _wait(futures[job.label])) for job in jobs]


def _wait(future: Any) -> Any:
    """A task's result, or the exception that lost it (a dead Dask worker raises here)."""
    try:
        return future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - recorded as the candidate's failure
        return exc
