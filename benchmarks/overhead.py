"""Benchmark: what Prefect and MLflow add to a training run.

    .venv/bin/python benchmarks/overhead.py                          # Online Retail, every family
    .venv/bin/python benchmarks/overhead.py --models popularity,mf,ease,content --repeat 2

The same work is done two ways, each in a fresh child process, on the same data, split and
seed: through the training flow (``shoprec_flows.training.training_pipeline``: Prefect tasks
on a temporary Prefect server, an MLflow parent run with one nested run per candidate, the
winner logged and registered), and through the core functions alone (``shoprec.pipeline``'s
preparation with the flow's default weighting search, the candidates trained side by side
on as many threads with the same thread caps, the winner selected and refitted, nothing
logged). The ratio of the two wall times is the orchestration's overhead. Wall times are
taken inside each child from its first import of shoprec (the flow's includes starting its
temporary Prefect server, as ``shoprec train`` does); the child's start-up is excluded from
both. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def _configs(args: argparse.Namespace) -> tuple:
    from shoprec.config import DataConfig, SplitConfig, TrainingConfig

    data = DataConfig(interactions=args.interactions, items=args.items)
    split = SplitConfig(method="temporal", test_days=args.test_days,
                        validation_days=args.validation_days, seed=args.seed)
    models = args.models.split(",") if args.models else None
    training = TrainingConfig(seed=args.seed, **({"models": models} if models else {}))
    return data, split, training


def run_flow(args: argparse.Namespace) -> dict:
    """The training flow, as ``shoprec train`` runs it."""
    from shoprec_flows.server_guard import start_for_training

    from shoprec.runtime import apply_runtime_defaults

    apply_runtime_defaults()
    data, split, training = _configs(args)
    # As the CLI does: the temporary server starts while the flow and what it needs import.
    start_for_training(training.models)
    from shoprec_flows.training import training_pipeline

    summary = training_pipeline(data=data, split=split, training=training, output_dir=None)
    return {"winner": summary["winner"],
            "validation": {e["model"]: e["validation"].get("ndcg@10")
                           for e in summary["leaderboard"] if e["status"] == "ok"}}


def run_direct(args: argparse.Namespace) -> dict:
    """The same preparation, training, selection and refit, without Prefect or MLflow."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from shoprec_flows.runners import (
        extra_threads,
        process_threads,
        share_network_pools,
        thread_workers,
        threads_per_candidate,
    )
    from threadpoolctl import threadpool_limits

    from shoprec.config import CleaningConfig, WeightingConfig, WeightingSearch
    from shoprec.features import item_frame
    from shoprec.pipeline import prepare
    from shoprec.training import (
        bundle_parts,
        job_result,
        plan_jobs,
        refit_bundle,
        select_winner,
        start_after,
        submission_order,
        train_candidate_row,
    )

    data, split, training = _configs(args)
    # The flow's default: the weighting chosen on validation first.
    prepared = prepare(data, CleaningConfig(), split, WeightingConfig(search=WeightingSearch()))
    encoded = prepared.encoded
    items = item_frame(prepared.data.items, encoded.items)
    threads = threads_per_candidate(training)
    jobs = plan_jobs(training, None, threads, process_threads(training))
    share_network_pools(jobs, training)  # TensorFlow's pools, as the flow sizes them

    # The flow's schedule: with network_slots set, networks wait for the one before them.
    after = start_after(jobs, training.network_slots)
    futures: dict = {}

    def train(job: object) -> object:
        if job.label in after:
            wait([futures[after[job.label]]])
        with threadpool_limits(threads):
            return train_candidate_row(job.candidate, job.params, encoded, items, training.ks)

    pool_size = thread_workers(training, waiting=extra_threads(jobs, training, after))
    # As the flow does: the bundle's parts are built beside the candidates.
    beside = ThreadPoolExecutor(1)
    parts = beside.submit(bundle_parts, prepared.data, prepared.weighting)
    with ThreadPoolExecutor(pool_size) as pool:
        for job in submission_order(jobs):
            futures[job.label] = pool.submit(train, job)
        results = [job_result(job, futures[job.label].exception()
                              or futures[job.label].result()) for job in jobs]
    winner = select_winner(results, training.primary_metric)
    refit_bundle(winner.model, winner.params, prepared.data, prepared.weighting, {},
                 parts=parts.result())
    beside.shutdown()
    return {"winner": winner.model,
            "validation": {r.model: r.validation.get("ndcg@10") for r in results
                           if r.status == "ok"}}


def child(args: argparse.Namespace) -> None:
    """Run one way in this process and print its wall time as JSON."""
    began = time.perf_counter()
    result = (run_flow if args.child == "flow" else run_direct)(args)
    print("OVERHEAD-JSON " + json.dumps({**result, "seconds": time.perf_counter() - began}))


def _run(way: str, argv: list[str], tmp: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/{way}-{time.time_ns()}.db",
           "PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect-storage-{time.time_ns()}",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    env.pop("PREFECT_API_URL", None)  # the flow gets a temporary server, as shoprec train
    done = subprocess.run([sys.executable, __file__, "--child", way, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("OVERHEAD-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"the {way} run failed:\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("OVERHEAD-JSON "))


def main() -> None:
    """Parse arguments; as parent, alternate the two ways and print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--items", default=None)
    parser.add_argument("--test-days", type=float, default=30)
    parser.add_argument("--validation-days", type=float, default=30)
    parser.add_argument("--models", default=None, help="Candidates (default: all).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each way (alternated).")
    parser.add_argument("--child", choices=["flow", "direct"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    argv = list(sys.argv[1:])
    times: dict[str, list[float]] = {"direct": [], "flow": []}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for way in ("direct", "flow"):  # alternated, so drift hits both alike
                results[way] = _run(way, argv, tmp)
                times[way].append(results[way]["seconds"])
    direct, flow = statistics.median(times["direct"]), statistics.median(times["flow"])
    print(f"data: {args.interactions}; models: {args.models or 'all'}; "
          f"{args.repeat} run(s) of each way, median wall seconds\n")
    print("| way | wall s (median) | runs | winner |")
    print("| --- | ---: | --- | --- |")
    for way, seconds in (("core functions directly", direct), ("training flow", flow)):
        key = "direct" if way.startswith("core") else "flow"
        print(f"| {way} | {seconds:.1f} | {', '.join(f'{t:.1f}' for t in times[key])} | "
              f"{results[key]['winner']} |")
    print(f"\noverhead of the flow: {flow - direct:+.1f} s, ratio {flow / direct:.3f}")
    same = results["direct"]["validation"] == results["flow"]["validation"]
    print(f"validation ndcg@10 of every candidate identical both ways: {same}")


if __name__ == "__main__":
    main()
