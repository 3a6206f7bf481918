r"""Serve every shoprec deployment, with its schedule, from this one process (no worker).

    .venv/bin/python deployments/serve.py                      # bundled sample, UTC schedules
    .venv/bin/python deployments/serve.py --dataset data/my_shop.parquet --format generic \\
        --training-cron "30 1 * * *" --timezone Europe/Paris

Uses Prefect's ``serve``: the deployments appear in the UI (training-nightly,
promote-model, rollback-model, prune-registry, batch-recommendations, demand-forecast);
scheduled and manual runs execute here until Ctrl+C. Point ``PREFECT_API_URL`` at a
Prefect server first (``prefect server start``); ``MLFLOW_TRACKING_URI`` chooses the
registry as everywhere else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_deployments(dataset: str = "", fmt: str | None = None, items: str | None = None,
                      training_cron: str | None = "0 2 * * *",
                      batch_cron: str | None = "0 5 * * *", timezone: str = "UTC",
                      dask_address: str | None = None,
                      forecast_cron: str | None = "0 3 * * 1",
                      prune_cron: str | None = None, shop: str = "") -> list:
    """The deployments of the project as ``RunnerDeployment`` objects.

    Args:
        dataset: Interactions file the scheduled runs use; empty for the bundled sample.
        fmt: Its format (default: detected).
        items: Items file.
        training_cron: Schedule of training-nightly (``None``: manual only).
        batch_cron: Schedule of batch-recommendations (``None``: manual only).
        timezone: Time zone of the schedules.
        dask_address: Train training-nightly's candidates on this Dask scheduler.
        forecast_cron: Schedule of demand-forecast (``None``: manual only).
        prune_cron: Schedule of prune-registry (``None``, the default: manual only).
            Prefect's ``serve`` sets each deployment's schedules from here at every start,
            so one added in the UI is gone after a restart: schedule it here.
        shop: One shop of several served from one Prefect server and one registry: its
            deployments are named ``<name>-<shop>``, and register, read and write its own
            (see :func:`shop_names`). Empty: the project's default names.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from shoprec_flows.forecast import demand_forecast
    from shoprec_flows.operations import (
        batch_recommendations,
        promote_model,
        prune_registry,
        rollback_model,
    )
    from shoprec_flows.training import training_pipeline

    data = {"interactions": dataset, "format": fmt, "items": items}
    names = shop_names(shop)
    training = ({"task_runner": "dask", "dask_address": dask_address} if dask_address
                else {})
    if shop:
        training |= {"registered_model_name": names["model"], "experiment": names["experiment"]}
    model = {"registered_model_name": names["model"]} if shop else {}
    forecast = ({"registered_model_name": names["demand"], "experiment": names["demand"],
                 "output_dir": f"{names['runs']}/forecast"} if shop else {})
    batch = {"registered_model_name": names["model"], "output_dir": f"{names['runs']}/batch",
             "demand_model_name": names["demand"]}

    def named(base: str) -> str:
        return f"{base}-{shop}" if shop else base

    def schedule(cron: str | None) -> list:
        return [Cron(cron, timezone=timezone)] if cron else []

    # One run of each at a time, as in prefect.yaml: one started beside another is cancelled.
    one = ConcurrencyLimitConfig(limit=1,
                                 collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    return [
        training_pipeline.to_deployment(
            name=named("training-nightly"),
            concurrency_limit=one, schedules=schedule(training_cron), tags=["shoprec"],
            parameters={"data": data, "output_dir": f"{names['runs']}/train",
                        **({"training": training} if training else {})},
            description="Validate, clean, train every candidate in parallel, evaluate and "
                        "publish the winner to the MLflow registry."),
        promote_model.to_deployment(
            name=named("promote-model"),
            concurrency_limit=one, tags=["shoprec"],
            parameters={"data": data, **({"promotion": model} if shop else {})},
            description="Promote a version (default: the challenger) to champion after "
                        "retraining its recipe and the champion's on the latest data's "
                        "training split and comparing them on its test users."),
        rollback_model.to_deployment(
            name=named("rollback-model"),
            concurrency_limit=one, tags=["shoprec"], parameters=model,
            description="Point champion back at previous-champion."),
        prune_registry.to_deployment(
            name=named("prune-registry"),
            concurrency_limit=one, schedules=schedule(prune_cron), tags=["shoprec"],
            parameters={"keep": 30, **model},
            description="Delete old registered versions no alias points at, with their "
                        "logged models and files; the newest `keep` stay."),
        batch_recommendations.to_deployment(
            name=named("batch-recommendations"),
            concurrency_limit=one, schedules=schedule(batch_cron), tags=["shoprec"],
            parameters={"batch": batch} if shop else {},
            description="Top K of every known user by the champion, as Parquet "
                        "partitioned by date."),
        demand_forecast.to_deployment(
            name=named("demand-forecast"),
            concurrency_limit=one, schedules=schedule(forecast_cron), tags=["shoprec"],
            parameters={"data": data, **({"forecast": forecast} if shop else {})},
            description="Weekly units per product: baselines and a boosted model scored on "
                        "the last weeks, then the next weeks' forecast."),
    ]


def shop_names(shop: str) -> dict[str, str]:
    """What a shop's deployments register, read and write, by ``--shop``.

    Without a shop, the project's defaults. With one (``north``): the registered models
    ``north-recommender`` and ``north-demand``, the MLflow experiment ``shoprec-north``,
    and the folder ``runs/north``. Two shops' deployments named alike replaced each
    other's (the second ``serve.py`` took the first's deployment, with its data).
    """
    if not shop:
        return {"model": "shoprec-recommender", "demand": "shoprec-demand",
                "experiment": "shoprec", "runs": "runs"}
    return {"model": f"{shop}-recommender", "demand": f"{shop}-demand",
            "experiment": f"shoprec-{shop}", "runs": f"runs/{shop}"}


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options every scheduled run would fail on, now rather than at 02:00."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if args.shop and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", args.shop):
        parser.error(f"--shop {args.shop!r}: use lower-case letters, digits and dashes (it "
                     "names deployments, registered models and a folder)")
    for option, path in (("--dataset", args.dataset), ("--items", args.items)):
        # A local file; the runs start in the project root, so a relative path is read
        # from there. URLs are left to fsspec.
        local = ROOT / Path(path).expanduser() if path and "://" not in path else None
        if local is not None and not local.exists():
            parser.error(f"{option} {path}: no such file (the flow runs start in {ROOT}, "
                         "so relative paths are taken from there)")
        if local is not None and local.is_dir():
            # Accepted, every night's run failed on it at 02:00 ("is a folder").
            parser.error(f"{option} {path} is a folder; shoprec reads one file (join a "
                         "folder of daily exports into one first)")
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        parser.error(f"--timezone {args.timezone}: not a time zone name such as UTC or "
                     "Europe/Paris")
    for option, cron in (("--training-cron", args.training_cron),
                         ("--batch-cron", args.batch_cron),
                         ("--forecast-cron", args.forecast_cron),
                         ("--prune-cron", args.prune_cron)):
        if cron.lower() == "none":
            continue
        try:
            CronSchedule(cron=cron, timezone=args.timezone)  # as Prefect will read it
        except ValidationError:
            parser.error(f"{option} {cron!r}: not a cron expression such as '0 2 * * *' "
                         "(or 'none' for manual runs only)")
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        # Served on Prefect's temporary server, each run's process started a server of its
        # own on the same database and was cancelled ("concurrency slot lost"), every night,
        # while this process went on as if all were well.
        parser.error("no Prefect server to serve the deployments on: start one (`prefect "
                     "server start`, or `deployments/stack.py up`) and set PREFECT_API_URL "
                     "(e.g. http://127.0.0.1:4200/api); a temporary server cannot run them")


def _check_one_checkout() -> None:
    """Warn when the flows come from another checkout than this script's.

    The environment's editable install names its own checkout's `flows` and `tasks`,
    while `shoprec` comes from this folder: served from a second clone with the first's
    virtual environment, a run mixed the two (a reader's traceback showed both).
    """
    import importlib.util

    for package, folder in (("shoprec_flows", "flows"), ("shoprec_tasks", "tasks")):
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin is not None and origin.parent != (ROOT / folder).resolve():
            print(f"warning: {package} comes from {origin.parent}, not from this checkout "
                  f"({ROOT}): the runs would mix the two; serve from that checkout, or "
                  f"install this one (pip install -e {ROOT})", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="", help="Interactions file (default: sample).")
    parser.add_argument("--format", default=None, help="generic, online-retail, movielens.")
    parser.add_argument("--items", default=None, help="Items file.")
    parser.add_argument("--training-cron", default="0 2 * * *",
                        help="Schedule of training-nightly; 'none' for manual only.")
    parser.add_argument("--batch-cron", default="0 5 * * *",
                        help="Schedule of batch-recommendations; 'none' for manual only.")
    parser.add_argument("--forecast-cron", default="0 3 * * 1",
                        help="Schedule of demand-forecast; 'none' for manual only.")
    parser.add_argument("--prune-cron", default="none",
                        help="Schedule of prune-registry (keep: 30), e.g. '0 4 * * 0' for "
                        "Sundays at 04:00; 'none' (the default) for manual only.")
    parser.add_argument("--timezone", default="UTC",
                        help="Time zone of the schedules (default UTC).")
    parser.add_argument("--shop", default="",
                        help="One shop of several on this Prefect server and registry: "
                        "deployments named <name>-SHOP, registered models SHOP-recommender "
                        "and SHOP-demand, experiment shoprec-SHOP, outputs under runs/SHOP.")
    parser.add_argument("--dask-address", default=None,
                        help="Train training-nightly's candidates on this Dask scheduler.")
    args = parser.parse_args(argv)
    from shoprec.runtime import DEPLOYMENT_DEFAULTS, apply_runtime_defaults

    # Before Prefect is imported (it reads its settings then): the flow runs' logs carry
    # shoprec's lines.
    for key, value in DEPLOYMENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    apply_runtime_defaults()
    _check(parser, args)
    # Flows import the project's packages by their top-level names, and entrypoints and
    # relative paths (runs/, the sample) are resolved from the project root.
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    _check_one_checkout()
    from prefect import serve

    serve(*build_deployments(
        args.dataset, args.format, args.items,
        None if args.training_cron.lower() == "none" else args.training_cron,
        None if args.batch_cron.lower() == "none" else args.batch_cron, args.timezone,
        args.dask_address,
        None if args.forecast_cron.lower() == "none" else args.forecast_cron,
        None if args.prune_cron.lower() == "none" else args.prune_cron, args.shop))


if __name__ == "__main__":
    main()
