"""Benchmark: a year of nightly versions in the registry, before and after `shoprec prune`.

    .venv/bin/python benchmarks/retention.py                    # 365 nights, keep 30
    .venv/bin/python benchmarks/retention.py --nights 1000 --keep 30 --bundle-kb 64

In a temporary SQLite store (the default registry), each simulated night registers a
version from a logged model of its own (``--bundle-kb`` of files), tagged as a training
publishes it; every third night its gate passed and champion moved (two alias-log tags).
Then the registry reads a nightly run makes (the champion's version, the busy check, the
alias log: each returns the whole registered model with its tags; and the search of every
version that a publication's sweep makes) are timed, ``prune --keep`` runs, and the reads
are timed again. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _grow(nights: int, bundle_kb: int, folder: Path) -> str:
    from shoprec.registry import tracking
    from shoprec.registry.aliases import CHALLENGER, CHAMPION, move_champion, set_alias

    name = "a-year"
    client = tracking.client()
    experiment = tracking.experiment_id()
    client.create_registered_model(name)
    staged = folder / "staged"
    for night in range(1, nights + 1):
        run = client.create_run(experiment, run_name=f"night {night}")
        model = client.create_logged_model(experiment, name="model",
                                           source_run_id=run.info.run_id)
        files = staged / model.model_id
        files.mkdir(parents=True)
        (files / "bundle.bin").write_bytes(os.urandom(bundle_kb * 1024))
        client.log_model_artifacts(model.model_id, str(files))
        client.set_terminated(run.info.run_id, "FINISHED")
        passed = night % 3 == 1
        version = str(client.create_model_version(
            name, f"models:/{model.model_id}", run.info.run_id,
            tags={"gate": "pass" if passed else "fail"}).version)
        set_alias(client, name, CHALLENGER, version)
        if passed:
            from shoprec.registry.aliases import alias_version

            move_champion(name, version, alias_version(name, CHAMPION), "train-gate",
                          "flow run nightly", "gate passed", f"2026-01-01T00:00:{night % 60:02d}")
    return name


def _reads(name: str, repeat: int = 5) -> dict[str, float]:
    """Median milliseconds of the registry reads a nightly run repeats."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import CHAMPION, alias_log, alias_version, champion_busy

    client = tracking.client()
    timed = {"alias_version": lambda: alias_version(name, CHAMPION),
             "champion_busy": lambda: champion_busy(client, name),
             "alias_log": lambda: alias_log(name),
             # What a publication's sweep of unlabelled versions reads (every version).
             "versions": lambda: client.search_model_versions(f"name = '{name}'")}
    found = {}
    for what, call in timed.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
        found[what] = statistics.median(times)
    return found


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--keep", type=int, default=30)
    parser.add_argument("--bundle-kb", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoprec-retention-") as tmp:
        folder = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        from shoprec.registry import tracking
        from shoprec.registry.retention import prune

        start = time.perf_counter()
        name = _grow(args.nights, args.bundle_kb, folder)
        grown = time.perf_counter() - start
        client = tracking.client()
        tags = len(client.get_registered_model(name).tags)
        before, disk_before = _reads(name), _du(folder / "mlartifacts")
        start = time.perf_counter()
        result = prune(name, args.keep, reason="benchmark")
        took = time.perf_counter() - start
        after, disk_after = _reads(name), _du(folder / "mlartifacts")
        left = len(client.search_model_versions(f"name = '{name}'"))
        tags_after = len(client.get_registered_model(name).tags)
    print(f"### {args.nights} nights, `prune --keep {args.keep}` "
          f"({args.bundle_kb} KB per version; built in {grown:.0f} s)\n")
    print("| | versions | model tags | mlartifacts | alias_version | champion_busy | "
          "alias_log | all versions |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| before | {args.nights} | {tags} | {disk_before / 2**20:.1f} MB | "
          + " | ".join(f"{before[k]:.1f} ms" for k in before) + " |")
    print(f"| after | {left} | {tags_after} | {disk_after / 2**20:.1f} MB | "
          + " | ".join(f"{after[k]:.1f} ms" for k in after) + " |")
    print(f"\nprune: {len(result['pruned'])} versions deleted, {result['moves_archived']} "
          f"alias moves archived, {result['freed_bytes'] / 2**20:.1f} MB freed, in "
          f"{took:.1f} s")


if __name__ == "__main__":
    main()
