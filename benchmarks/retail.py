"""Benchmark: the whole training pipeline on the full UCI Online Retail data (or any data).

    .venv/bin/python benchmarks/retail.py                       # Online Retail, temporal 30/30
    .venv/bin/python benchmarks/retail.py --interactions DIR/interactions.parquet \\
        --items DIR/items.parquet --split random

The pipeline (the Prefect flow, with a temporary Prefect server and a throw-away MLflow
SQLite store) runs in a child process, so its wall time and peak resident memory are its
own; per-step times are the Prefect task runs' durations. Prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probe import describe, probe  # benchmarks/probe.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def child(args: argparse.Namespace) -> None:
    """Run the flow in this process and print its summary and task timings as JSON."""
    import asyncio
    import threading

    import psutil
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )
    from shoprec_cli.app import _parse_params, _training_weighting
    from shoprec_flows.server_guard import start_for_training

    from shoprec.config import DataConfig, SplitConfig, TrainingConfig
    from shoprec.runtime import apply_runtime_defaults

    apply_runtime_defaults()
    models = args.models.split(",") if args.models else None
    # --network-slots: the flow's default unless given; 0 for no limit.
    slots = {} if args.network_slots is None else {"network_slots": args.network_slots or None}
    training = TrainingConfig(**({"models": models} if models else {}), **slots, seed=args.seed,
                              blend=args.blend, params=_parse_params(args.param),
                              tune_trials=args.tune_trials, tune_seconds=args.tune_seconds,
                              tune_models=args.tune_models.split(",") if args.tune_models
                              else None)
    # As `shoprec train` does: the temporary server starts while the flow, and what its
    # candidates need, are imported (and stops if this process is killed).
    start_for_training(training.models)
    from shoprec_flows.training import training_pipeline

    # Resident memory sampled every 0.2 s, to attribute a peak to each task's time window.
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        process = psutil.Process()
        while not done.is_set():
            samples.append((time.time(), process.memory_info().rss / 2**30))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = training_pipeline(
        data=DataConfig(interactions=args.interactions, items=args.items, format=args.format),
        split=SplitConfig(method=args.split, test_days=args.test_days,
                          validation_days=args.validation_days, seed=args.seed),
        training=training,
        weighting=_training_weighting(args.recency_half_life_days, args.repeats,
                                      args.quantity_damping, args.choose_weighting,
                                      args.weighting_half_lives),
        output_dir=args.output_dir,
    )

    async def timings() -> list[dict]:
        parent = summary["prefect_flow_run_id"]
        async with get_client() as client:
            # The candidates' tasks belong to the nested flow run shoprec-candidates.
            nested = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[parent, *(str(run.id) for run in nested)])))
        return sorted(({"task": r.name, "state": r.state.name,
                        "start": r.start_time.isoformat() if r.start_time else None,
                        "seconds": r.total_run_time.total_seconds(),
                        "peak_gb": _peak(samples, r.start_time, r.end_time)} for r in runs),
                      key=lambda r: r["start"] or "")

    done.set()
    # The reads below are the benchmark's, not the command's: their time is reported so
    # that the parent leaves it out of the run's wall time.
    began = time.perf_counter()
    steps, chosen = asyncio.run(timings()), _chosen(summary["mlflow_run_id"])
    print("BENCHMARK-JSON " + json.dumps({"summary": summary, "steps": steps, "chosen": chosen,
                                          "report_seconds": time.perf_counter() - began},
                                         default=str))


#: Hyperparameters a candidate chooses on validation unless given, as its MLflow run logs
#: them (a value given with --param is logged alike).
CHOSEN = ("regularization", "popularity_smoothing", "similarity_exponent", "epochs",
          "history_weights")


def _chosen(parent_run_id: str) -> dict[str, dict[str, str]]:
    """Per candidate that trained, those values (from its nested MLflow run); empty when
    the store cannot be read (the figures above them still print)."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        parent = client.get_run(parent_run_id)
        runs = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_run_id}'")
    except Exception as exc:  # noqa: BLE001 - a report line, not the benchmark's figures
        print(f"the candidates' values could not be read from MLflow: {exc}", file=sys.stderr)
        return {}
    return {run.data.tags.get("mlflow.runName", run.info.run_id):
            {k: run.data.params[k] for k in CHOSEN
             if run.data.params.get(k) not in (None, "None")}
            for run in runs if run.data.tags.get("status") == "ok"}


def main() -> None:
    """Parse arguments; as parent, run the child and print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--items", default=None)
    parser.add_argument("--format", default=None)
    parser.add_argument("--split", default="temporal")
    parser.add_argument("--test-days", type=float, default=30)
    parser.add_argument("--validation-days", type=float, default=30)
    parser.add_argument("--models", default=None, help="Candidates (default: all).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--network-slots", type=int, default=None,
                        help="Networks trained at a time (0: no limit; default: the flow's).")
    parser.add_argument("--tune-trials", type=int, default=0,
                        help="Search trials per family (0: no search stage).")
    parser.add_argument("--tune-seconds", type=float, default=None)
    parser.add_argument("--tune-models", default=None, help="Families to search.")
    parser.add_argument("--blend", type=int, default=0,
                        help="Also blend the best N candidates (0: no blend).")
    parser.add_argument("--recency-half-life-days", type=float, default=None,
                        help="Event weighting (as `shoprec train`): recency decay.")
    parser.add_argument("--repeats", default=None, help="sum or max (default: sum).")
    parser.add_argument("--quantity-damping", default=None, help="default: log.")
    parser.add_argument("--choose-weighting", dest="choose_weighting", action="store_true",
                        default=None, help="As `shoprec train`: the weighting is chosen on "
                        "validation (the default unless a weighting option is given).")
    parser.add_argument("--fixed-weighting", dest="choose_weighting", action="store_false",
                        help="Use the weighting the options give (or the default) as is.")
    parser.add_argument("--weighting-half-lives", default="7,30,120")
    parser.add_argument("--param", action="append", default=None,
                        help="Hyperparameter MODEL.NAME=VALUE, as `shoprec train --param`.")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--json-out", default=None, help="Also write the figures as JSON.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not Path(args.interactions).exists():
        # A fresh clone has no ../shared beside it: the child failed with "exit 1" alone.
        raise SystemExit(f"{args.interactions}: no such file; give --interactions, or put "
                         "the UCI Online Retail file (online_retail.csv.gz, see "
                         "benchmarks/RESULTS.md) there")

    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away MLflow store and result cache; Prefect's own home is the user's.
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               "PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect-storage",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
        env.pop("PREFECT_API_URL", None)  # a temporary server of its own, in the child
        command = [sys.executable, __file__, "--child", *sys.argv[1:]]
        if "--output-dir" not in sys.argv:
            command += ["--output-dir", f"{tmp}/out"]
        # The machine's speed just before and after, outside the timed run (probe.py).
        probe_before = probe()
        began = time.perf_counter()
        with open(f"{tmp}/child.err", "w+", encoding="utf-8") as errors:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=errors, text=True)
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - began
            if os.waitstatus_to_exitcode(status) != 0:
                # Its own words, not "exit 1" alone.
                errors.seek(0)
                tail = "\n".join(errors.read().splitlines()[-25:])
                raise SystemExit(f"{tail}\nthe pipeline failed (exit "
                                 f"{os.waitstatus_to_exitcode(status)})")
    probe_after = probe()
    line = next(x for x in output.splitlines() if x.startswith("BENCHMARK-JSON "))
    result = json.loads(line.removeprefix("BENCHMARK-JSON "))
    seconds -= result["report_seconds"]
    summary, steps = result["summary"], result["steps"]
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {**result, "wall_seconds": round(seconds, 1),
             "peak_rss_gb": round(usage.ru_maxrss / 1024 / 1024, 2),
             "probe_before": probe_before, "probe_after": probe_after}, default=str))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"data: {summary['data']['source']}: {summary['data']['rows_in']:,} rows in, "
          f"{summary['data']['rows_clean']:,} clean, {summary['data']['users']:,} users, "
          f"{summary['data']['items']:,} items; split {summary['split']['method']}, "
          f"test users evaluated {summary['split']['test']['evaluated_users']:,}")
    weighting = summary.get("weighting") or {}
    choice = weighting.get("choice") or {}
    print(f"event weighting: {weighting.get('description')}"
          + (f", chosen on validation in {choice['seconds']:.1f} s from: " + "; ".join(
              f"{c['weighting']} {c['validation_ndcg@10']:.4f}" for c in choice["candidates"])
             if choice.get("candidates") else ""))
    print(f"whole run (process start to exit, incl. Prefect server start; not the "
          f"benchmark's own {result['report_seconds']:.1f} s reading the step times and "
          f"chosen values afterwards): {seconds:.1f} s; "
          f"peak RSS {usage.ru_maxrss / 1024 / 1024:.2f} GB")
    print(f"machine probe (benchmarks/probe.py; seconds, lower is faster): before "
          f"{describe(probe_before)}, after {describe(probe_after)}\n")
    primary = summary["primary_metric"]
    metrics = [primary, "recall@10", "map@10", "hit_rate@10", "coverage@10"]
    print("| model | status | " + " | ".join(f"test {m}" for m in metrics)
          + f" | val {primary} | train s | refit s |")
    print("| --- | --- | " + " | ".join("---:" for _ in metrics) + " | ---: | ---: | ---: |")
    pop = next((e for e in summary["leaderboard"] if e["model"] == "popularity"), None)
    for entry in summary["leaderboard"]:
        cells = [_fmt(entry["test"].get(m)) for m in metrics]
        print(f"| {entry['model']} | {entry['status']} | " + " | ".join(cells)
              + f" | {_fmt(entry['validation'].get(primary))} | {entry['train_seconds']:.1f} | "
              f"{entry.get('refit_seconds', 0.0):.1f} |")
    chosen = result.get("chosen") or {}
    if any(chosen.values()):
        print("\nchosen on validation (or as given): " + "; ".join(
            f"{model} " + ", ".join(f"{k} {v}" for k, v in values.items())
            for model, values in sorted(chosen.items()) if values))
    if pop and pop["test"].get(primary):
        ratios = ", ".join(f"{e['model']} {e['test'][primary] / pop['test'][primary]:.2f}x"
                           for e in summary["leaderboard"]
                           if e["status"] == "ok" and e["model"] != "popularity")
        print(f"\n{primary} relative to popularity: {ratios}")
    bias = ["novelty@10", "avg_popularity@10", "gini@10", "long_tail@10", "ndcg_light@10",
            "ndcg_medium@10", "ndcg_heavy@10"]
    if any("novelty@10" in e["test"] for e in summary["leaderboard"]):
        print("\nBeyond accuracy (test):\n")
        print("| model | " + " | ".join(bias) + " |")
        print("| --- | " + " | ".join("---:" for _ in bias) + " |")
        for entry in summary["leaderboard"]:
            if "novelty@10" in entry["test"]:
                print(f"| {entry['model']} | "
                      + " | ".join(_fmt(entry["test"].get(m)) for m in bias) + " |")
    curves = [e for e in summary["leaderboard"] if e.get("diversity")]
    if curves:
        print("\nAccuracy/novelty trade-off of --diversity on test (ndcg@10 / novelty@10 / "
              "long_tail@10 at each weight):\n")
        weights = [p["weight"] for p in curves[0]["diversity"]]
        print("| model | " + " | ".join(f"{w:g}" for w in weights) + " |")
        print("| --- | " + " | ".join("---" for _ in weights) + " |")
        for entry in curves:
            print(f"| {entry['model']} | " + " | ".join(
                f"{p['ndcg@10']:.4f} / {p['novelty@10']:.2f} / {p['long_tail@10']:.2f}"
                for p in entry["diversity"]) + " |")
    for family, found in summary.get("tuning", {}).items():
        print(f"search {family}: {found['trials']} trials ({found['pruned']} pruned, "
              f"{found['failed']} failed) in {found['seconds']:.1f} s; validation "
              f"{_fmt(found['configured_value'])} configured -> {_fmt(found['best_value'])}; "
              f"chose {found['best_params']}")
    print(f"winner {summary['winner']}, registered version {summary['registered']['version']}"
          f" {summary['registered']['aliases']}\n")
    print("| step | seconds | peak RSS of the flow process during the step (GB) |")
    print("| --- | ---: | ---: |")
    for step in steps:
        peak = step.get("peak_gb")
        print(f"| {step['task']} | {step['seconds']:.1f} | "
              f"{'-' if peak is None else f'{peak:.2f}'} |")


def _peak(samples: list[tuple[float, float]], start, end) -> float | None:
    """Largest RSS sample (GB) of the flow's process between ``start`` and ``end``."""
    if start is None or end is None:
        return None
    inside = [gb for at, gb in samples if start.timestamp() <= at <= end.timestamp()]
    return round(max(inside), 2) if inside else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
