"""Batch recommendations: the top K of every known user, written as date-partitioned Parquet.

Users are scored in batches straight from the bundle's stored histories (no request
frames), :func:`~shoprec.models.base.top_k` picks the top K, and each batch is appended to
a Parquet file, so memory stays bounded by a few batches of users × items.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.files import rename_durably
from shoprec.ranking import diversity_pool, mask_seen, rerank_for_novelty, top_k
from shoprec.registry.bundle import ModelBundle
from shoprec.threads import limit_threads

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("rank", pa.int16()),
    ("item_id", pa.string()),
    ("score", pa.float32()),
    ("model_version", pa.string()),
    ("generated_at", pa.timestamp("us", tz="UTC")),
])
#: The history items behind each recommendation: filled with ``explain``, null without.
#: Always in the schema, so that days written with and without explanations read back as
#: one data set (pandas takes the columns of the first file it reads).
BECAUSE = pa.field("because", pa.list_(pa.struct([("item_id", pa.string()),
                                                   ("share", pa.float32())])))
#: Scores of the batches in flight (threads x users x items, float32) at most: a larger
#: ``batch_size`` is cut.
BATCH_BYTES = 2**30
#: History items named per explained recommendation.
EXPLAIN_TOP = 3


@dataclass
class BatchResult:
    """What a batch run wrote.

    Attributes:
        path: The Parquet file written.
        partition: Its date partition folder (``generated_date=YYYY-MM-DD``).
        users: Users scored.
        rows: Rows written (users × up to K).
        seconds: Scoring and writing time.
        users_per_second: ``users / seconds``.
        model_version: The registry version that scored.
        generated_at: The run's timestamp (UTC, ISO 8601).
        stock_limited: Catalogue items down-weighted for stock (forecast to sell out).
    """

    path: str
    partition: str
    users: int
    rows: int
    seconds: float
    users_per_second: float
    model_version: str
    generated_at: str
    stock_limited: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def write_recommendations(bundle: ModelBundle, output_dir: str | Path, k: int = 10,
                          batch_size: int = 4096, model_version: str = "",
                          generated_at: datetime | None = None,
                          threads: int | None = None, explain: bool = False,
                          diversity: float = 0.0,
                          availability: np.ndarray | None = None,
                          model_name: str = "", scored_by: str = "") -> BatchResult:
    """Score every user of ``bundle`` and write their top ``k`` as Parquet.

    The file goes to ``output_dir/generated_date=YYYY-MM-DD/recommendations.parquet``
    (Hive-style partitioning, read back with ``pandas.read_parquet(output_dir)``). It is
    written under a temporary name and renamed at the end, so readers never see half a
    file, and a second run on the same day replaces that day's recommendations.

    Args:
        bundle: A published model (``ModelBundle``) with its users' histories.
        output_dir: Root of the partitioned data set.
        k: Recommendations per user (seen items excluded).
        batch_size: Users per scoring batch.
        model_version: Registry version recorded in every row.
        generated_at: Timestamp recorded in every row (default: now).
        threads: Batches scored at the same time (default: one per core).
        explain: Add a ``because`` column: for each row, up to three of the user's history
            items that raised the recommendation, with their shares (see
            :meth:`~shoprec.models.base.Recommender.explain`; costs a model call per user).
        diversity: Weight of the novelty re-ranking of each list (0: the model's order; see
            :func:`~shoprec.ranking.rerank_for_novelty`); scores are then the blend.
        availability: Per item (the bundle's item order), the share in [0, 1] of its
            forecast demand that the stock covers (:func:`shoprec.inventory.availability`);
            each list is re-ranked with relevance times availability, so products forecast
            to sell out move down and those with no units leave. Scores are then the
            re-ranked ones.
        model_name: The registered model that scores, recorded in the file's metadata
            (``shoprec.registered_model``): the day's file of another model in this folder
            is never replaced.
        scored_by: Which of its versions scored: the alias (``champion``) or ``version N``,
            recorded in the metadata (``shoprec.scored_by``): the day's file of another
            alias in this folder (an A/B test's other arm) is never replaced.

    Raises:
        ValueError: ``k`` or ``batch_size`` below 1.
        ConfigError: The day's file in ``output_dir`` is another registered model's.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be at least 1, got k={k}, "
                         f"batch_size={batch_size}")
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    stamp = generated_at or datetime.now(UTC)
    # UTC's day, as the rows' generated_at: a caller's Paris midnight is filed under UTC's.
    partition = Path(output_dir) / f"generated_date={stamp.astimezone(UTC).date().isoformat()}"
    created = not partition.exists()
    partition.mkdir(parents=True, exist_ok=True)
    _remove_dead_drafts(Path(output_dir), partition)
    final = partition / "recommendations.parquet"
    _refuse_other_models_file(final, model_name, scored_by)
    temporary = partition / f".recommendations-{_writer()}.parquet.tmp"
    # Ids become Arrow strings once; each batch then gathers them with a C++ take.
    user_ids = pa.array(np.asarray(bundle.users.ids, dtype=object), pa.string())
    item_ids = pa.array(np.asarray(bundle.items.ids, dtype=object), pa.string())
    version = pa.array([model_version], pa.string())
    n_users = len(user_ids)
    parallel = max(1, threads or os.cpu_count() or 1)
    # Every batch in flight (one per thread) holds its scores: they share the budget.
    fits = max(1, BATCH_BYTES // (4 * max(1, len(item_ids)) * parallel))
    if batch_size > fits:
        logger.info("batch_size %d cut to %d: %d batches' scores at a time stay under %d MiB",
                    batch_size, fits, parallel, BATCH_BYTES >> 20)
    batch_size = max(1, min(batch_size, fits, n_users))
    # numpy's datetime64 carries no zone; Arrow reads it as UTC, which it is.
    moment = np.datetime64(stamp.astimezone(UTC).replace(tzinfo=None), "us")
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int16), batch_size)
    schema = SCHEMA.append(BECAUSE)
    # What the scores mean depends on how the lists were made: said with the file, where
    # a consumer reading one day's file can see it.
    options = {"k": k, "explain": explain, "diversity": diversity,
               "stock": availability is not None}
    schema = schema.with_metadata({OPTIONS_KEY: json.dumps(options, sort_keys=True),
                                   **({MODEL_KEY: model_name} if model_name else {}),
                                   **({SCORED_BY_KEY: scored_by} if scored_by else {})})

    def because(history: Any, top: np.ndarray) -> pa.Array:
        """The explanations of a batch's rows, in row order (user by user, best first)."""
        ids = bundle.items.ids
        out = []
        for user in range(len(top)):
            chosen = top[user][top[user] >= 0]
            out += [[{"item_id": str(ids[h]), "share": share} for h, share in reasons]
                    for reasons in bundle.model.explain(history[user], chosen, EXPLAIN_TOP)]
        return pa.array(out, BECAUSE.type)

    # Erased shoppers get no rows (the suppression list as it is when the run starts).
    suppressed = np.zeros(n_users, dtype=bool)
    suppressed[bundle.suppressed_rows()] = True

    keeps_seen = bundle.keeps_seen  # a shop of repeat purchases: own items stay

    def score_batch(start: int) -> pa.Table:
        stop = min(start + batch_size, n_users)
        history = bundle.history[start:stop]
        # Every family scores the stored rows as a served request does (mf folds them in,
        # not its learned user factors): an e-mail's list is the site's, and the one the
        # figures measured, and its `because` shares add up to its score.
        scores = bundle.model.score(history)
        if not keeps_seen:
            mask_seen(scores, history)
        # A shopper whose products the model ties with nothing else (bought only on their
        # own, or only with each other: they score each other, then are masked) has every
        # unseen score 0, whose "ranking" is catalogue order: popularity instead, as a
        # served answer gives them (the same test: its top K all 0 or padding).
        best = scores.max(axis=1) if scores.shape[1] else np.zeros(len(scores))
        maybe = np.flatnonzero((best == 0) | ~np.isfinite(best))
        if len(maybe):
            values = top_k(scores[maybe], k)[1]
            blank = maybe[np.all((values == 0) | ~np.isfinite(values), axis=1)]
            if len(blank):
                fallback = bundle.fallback.score(history[blank])
                if not keeps_seen:
                    mask_seen(fallback, history[blank])
                scores[blank] = fallback
        if diversity > 0 or availability is not None:
            pool, values = top_k(scores, diversity_pool(k))
            top, best = rerank_for_novelty(pool, values, bundle.novelty, k, diversity,
                                           availability)
        else:
            top, best = top_k(scores, k)
        # Fewer than k unseen items leaves -1 padding; erased shoppers are left out.
        keep = (top >= 0) & ~suppressed[start:stop, None]
        top = np.where(keep, top, -1)
        keep = keep.ravel()
        users = np.repeat(np.arange(start, stop), k)[keep]
        columns = {
            "user_id": user_ids.take(pa.array(users)),
            "rank": pa.array(ranks[: (stop - start) * k][keep], pa.int16()),
            "item_id": item_ids.take(pa.array(top.ravel()[keep])),
            "score": pa.array(best.ravel()[keep], pa.float32()),
            "model_version": version.take(pa.array(np.zeros(len(users), np.int64))),
            "generated_at": pa.array(np.full(len(users), moment),
                                     SCHEMA.field("generated_at").type),
        }
        columns["because"] = (because(history, top) if explain
                              else pa.nulls(len(users), BECAUSE.type))
        return pa.table(columns, schema=schema)

    workers = max(1, min(parallel, -(-n_users // batch_size)))
    began = time.perf_counter()
    rows = 0
    try:
        # Batches are scored in parallel threads, each with one BLAS thread (numpy and
        # BLAS release the GIL; the wheels' OpenBLAS has one pool for the process, capped
        # here for all of them), and written in order by this thread; at most ``workers``
        # batches are in flight, so memory stays bounded.
        # Again: another run's failed first run of the day may have removed the partition
        # it found empty since this one made it.
        partition.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(temporary, schema) as writer, \
                limit_threads(1, "blas"), ThreadPoolExecutor(workers) as pool:
            pending: deque = deque()
            for start in range(0, n_users, batch_size):
                pending.append(pool.submit(score_batch, start))
                if len(pending) >= workers:
                    table = pending.popleft().result()
                    writer.write_table(table)
                    rows += table.num_rows
            while pending:
                table = pending.popleft().result()
                writer.write_table(table)
                rows += table.num_rows
        rename_durably(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
        if created and not any(partition.iterdir()):  # a failed first run of the day
            with contextlib.suppress(OSError):  # another run's draft arrived meanwhile
                partition.rmdir()
    seconds = time.perf_counter() - began
    scored = n_users - int(suppressed.sum())
    result = BatchResult(str(final), str(partition), scored, rows, round(seconds, 3),
                         round(scored / seconds, 1) if seconds > 0 else float("inf"),
                         model_version, stamp.isoformat(),
                         0 if availability is None else int((availability < 1).sum()))
    logger.info("batch recommendations: %d users, %d rows in %.1f s (%.0f users/s) -> %s",
                scored, rows, seconds, result.users_per_second, final)
    return result


#: Key of the batch file's Parquet metadata naming the registered model that scored.
MODEL_KEY = "shoprec.registered_model"
#: Parquet metadata key of the options a file's lists were made with (JSON: k, explain,
#: diversity, stock).
OPTIONS_KEY = "shoprec.batch_options"
#: Parquet metadata key of the alias (or ``version N``) whose version scored the file.
SCORED_BY_KEY = "shoprec.scored_by"


def check_day_file(output_dir: str | Path, model_name: str, scored_by: str = "") -> None:
    """Refuse a batch into ``output_dir`` when a day's file there is another model's.

    Another registered model's, or another alias's of the same model (``scored_by``).
    Every day's file, not the day's alone: the folder is read as one data set, whose rows
    do not say whose they are (a reader's "latest day" query switched shops unseen).
    Called before the model is loaded; :func:`write_recommendations` checks the day again.

    Raises:
        ConfigError: A file records another model.
    """
    # Every day's file, the newest (today's, when there is one) first.
    for other in sorted(Path(output_dir).glob("generated_date=*/recommendations.parquet"),
                        reverse=True):
        _refuse_other_models_file(other, model_name, scored_by)


def _refuse_other_models_file(final: Path, model_name: str, scored_by: str = "") -> None:
    """Refuse to replace the day's file of another registered model, or of another alias.

    Two shops' batches into one folder (the default ``runs/batch``) replaced each other's
    day without a word, and the rows do not say whose they are; so did a challenger's batch
    the champion's (an A/B test's two arms), whose rows differ only by version.

    Raises:
        ConfigError: ``final`` records another model, or another alias of it.
    """
    if not model_name or not final.exists():
        return
    try:
        metadata = pq.read_schema(final).metadata or {}
    except (OSError, pa.ArrowException):
        return  # unreadable: replaced as before
    recorded = metadata.get(MODEL_KEY.encode(), b"").decode("utf-8", "replace")
    if recorded and recorded != model_name:
        from shoprec.errors import ConfigError

        raise ConfigError(f"{final} holds {recorded}'s recommendations, and a batch's "
                          f"folder is read as one data set; give {model_name} a folder of its "
                          "own (--output-dir, output_dir in the form), or move that file "
                          "first")
    theirs = metadata.get(SCORED_BY_KEY.encode(), b"").decode("utf-8", "replace")
    if scored_by and theirs and theirs != scored_by:
        from shoprec.errors import ConfigError

        raise ConfigError(f"{final} holds {_scorer(model_name, theirs)}'s recommendations, "
                          "and a batch's folder is read as one data set; give the batch of "
                          f"{_scorer(model_name, scored_by)} a folder of its own "
                          "(--output-dir, output_dir in the form), or move that file first")


def _scorer(model_name: str, scored_by: str) -> str:
    """``name@alias``, or ``name version N`` for a version given by number."""
    return f"{model_name} {scored_by}" if scored_by.startswith("version ") else \
        f"{model_name}@{scored_by}"


def _writer() -> str:
    """Who writes a draft: host, PID namespace and process id.

    A process id means something only in its own namespace: on a folder shared between
    machines or containers, another's draft is never taken for a dead one of ours.
    """
    try:
        space = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        space = "0"
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
    return f"{host}.{space}.{os.getpid()}"


def _remove_dead_drafts(output_dir: Path, today: Path) -> None:
    """Delete the drafts of runs killed while writing into any day of ``output_dir``.

    A draft is named by its writer (:func:`_writer`); one of this host and PID namespace
    whose process is gone will never be renamed, and would stay beside its day's file for
    good (a run killed before midnight left one in a day no later run writes). A live
    writer's, and any other host's or container's, is left alone. A day other than
    ``today`` left empty (the killed run was its first) goes too.
    """
    here = _writer().rpartition(".")[0]
    for draft in output_dir.glob("generated_date=*/.recommendations-*.parquet.tmp"):
        space, _, pid = (draft.name.removeprefix(".recommendations-")
                         .removesuffix(".parquet.tmp").rpartition("."))
        dead = space == here and pid.isdigit() and int(pid) != os.getpid() \
            and not psutil.pid_exists(int(pid))
        # Another host's or container's (a restarted container has a new name and PID
        # namespace): no day's file takes a day to write, so a day-old draft is abandoned.
        abandoned = space not in ("", here) and _age_seconds(draft) > FOREIGN_DRAFT_SECONDS
        # An older shoprec named its drafts by PID alone, with no host: one left an hour
        # ago is no live writer's (a day's file is written in seconds to minutes).
        older = space == "" and pid.isdigit() and _age_seconds(draft) > OLDER_DRAFT_SECONDS
        if dead or older or abandoned:
            logger.info("removing %s, left by a batch run that was killed", draft)
            draft.unlink(missing_ok=True)
            if draft.parent != today:
                with contextlib.suppress(OSError):  # not empty: the day has its file
                    draft.parent.rmdir()


#: How old a draft named the older way (no host) must be to count as abandoned.
OLDER_DRAFT_SECONDS = 3600
#: How old another host's or container's draft must be to count as abandoned.
FOREIGN_DRAFT_SECONDS = 86_400


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0

