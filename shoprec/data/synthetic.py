"""Synthetic shop data with planted structure, for tests and benchmarks.

Users belong to taste segments; each segment prefers a few categories. Items belong to one
category and have a long-tail popularity; their titles and descriptions are drawn from a
vocabulary of their category, so text carries signal. A model that learns the segments beats
popularity; a content model that reads the text does too. Interactions are written in chunks
of users, so ten million rows never need more than a few hundred MB.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.errors import ConfigError

logger = logging.getLogger(__name__)

_CATEGORIES = (
    "kitchen", "garden", "toys", "stationery", "lighting", "textiles", "bathroom", "party",
    "jewellery", "bags", "pets", "crafts", "christmas", "baking", "storage", "clocks",
    "candles", "picnic", "travel", "wellness", "tools", "books", "music", "sports", "beauty",
    "baby", "office", "outdoor", "furniture", "games", "art", "cleaning", "tea", "wine",
    "frames", "mirrors", "rugs", "plants", "shoes", "hats",
)
_SHARED_WORDS = (
    "red", "blue", "green", "white", "black", "pink", "gold", "silver", "small", "large",
    "vintage", "classic", "set", "pack", "deluxe", "mini", "retro", "modern",
)
_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "sa", "no", "vi", "be", "da", "fo", "gu", "ha",
              "je", "ki", "lu", "ma", "ne", "po", "ri", "si", "ta", "vo", "wa", "ze", "xo")

_EVENTS = np.array(["view", "cart", "purchase"], dtype=object)
_EVENT_P = np.array([0.6, 0.25, 0.15])

#: Rows per written chunk; fixed so that the output depends on the seed only.
CHUNK_ROWS = 500_000


@dataclass
class GeneratedData:
    """What :func:`generate` wrote.

    Attributes:
        interactions_path: The interactions Parquet file.
        items_path: The items Parquet file.
        users: Users with at least one interaction.
        items: Items in the catalogue.
        interactions: Interaction rows written.
        segments: Number of taste segments planted.
        categories: Number of item categories.
        seconds: Time taken.
    """

    interactions_path: str
    items_path: str
    users: int
    items: int
    interactions: int
    segments: int
    categories: int
    seconds: float

    def to_dict(self) -> dict:
        """Return the summary as JSON-serialisable data."""
        return asdict(self)


def _vocabulary(rng: np.random.Generator, n_categories: int, words: int = 24) -> list[np.ndarray]:
    """Distinct pseudo-words per category, so no word is shared between categories."""
    taken: set[str] = set(_SHARED_WORDS)
    vocab = []
    for _ in range(n_categories):
        chosen: list[str] = []
        while len(chosen) < words:
            length = int(rng.integers(2, 4))
            word = "".join(rng.choice(_SYLLABLES, size=length))
            if word not in taken:
                taken.add(word)
                chosen.append(word)
        vocab.append(np.array(chosen, dtype=object))
    return vocab


def _category_names(n: int) -> list[str]:
    return [_CATEGORIES[i % len(_CATEGORIES)] + ("" if i < len(_CATEGORIES)
                                                 else f"-{i // len(_CATEGORIES)}")
            for i in range(n)]


def make_items(rng: np.random.Generator, n_items: int, n_categories: int) -> pd.DataFrame:
    """Build the catalogue: category, long-tail popularity, text from category vocabularies."""
    vocab = _vocabulary(rng, n_categories)
    names = _category_names(n_categories)
    category = rng.permutation(np.arange(n_items) % n_categories)
    shared = np.array(_SHARED_WORDS, dtype=object)
    titles, descriptions, brands = [], [], []
    for c in category:
        words = rng.choice(vocab[c], size=8)
        titles.append(f"{rng.choice(shared)} {words[0]} {words[1]}".upper())
        descriptions.append(" ".join([*words[2:], *rng.choice(shared, size=2)]))
        brands.append(f"{names[c]}-{vocab[c][int(rng.integers(0, 3))]}")
    price = np.round(rng.lognormal(mean=1.0 + 0.1 * (category % 7), sigma=0.5), 2)
    width = len(str(n_items))
    return pd.DataFrame({
        "item_id": [f"I{i:0{width}d}" for i in range(n_items)],
        "title": titles,
        "description": descriptions,
        "category": [names[c] for c in category],
        "brand": brands,
        "price": price,
    })


#: The most users or items drawn: their ids and tastes are held whole (about 10 GB here).
MAX_USERS_OR_ITEMS = 100_000_000
#: The most rows: they are written in chunks, and 10 billion is days of writing already.
MAX_INTERACTIONS = 10_000_000_000


def generate(out_dir: str | Path, users: int, items: int, interactions: int, seed: int = 0,
             segments: int | None = None, categories: int | None = None, days: int = 180,
             exploration: float = 0.15, start: str = "2024-01-01") -> GeneratedData:
    """Write ``interactions.parquet`` and ``items.parquet`` with planted taste segments.

    Args:
        out_dir: Folder to write into (created if missing).
        users: Number of users.
        items: Number of items.
        interactions: Number of interaction rows, exactly.
        seed: Seed; the same seed gives the same files.
        segments: Taste segments; default ``max(2, min(12, categories))``.
        categories: Item categories; default ``items // 25`` clipped to 4..40.
        days: Length of the period the timestamps cover.
        exploration: Share of interactions drawn from global popularity instead of taste.
        start: First day of the period (UTC).

    Returns:
        A summary of what was written.

    Raises:
        ConfigError: A size is not positive or the shape makes no sense.
    """
    began = time.perf_counter()
    check_sizes(users, items, interactions, days, start)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    catalogue, category, popularity, preferences, user_segment = _plant(
        rng, users, items, segments, categories)
    n_categories, n_segments = preferences.shape[1], preferences.shape[0]
    global_cdf = np.cumsum(popularity) / popularity.sum()
    # Items sorted by category; within each category a CDF shifted by the category number,
    # so one searchsorted over "category + u" draws an item of that category.
    by_category = np.argsort(category, kind="stable")
    sorted_pop = popularity[by_category]
    sorted_cat = category[by_category]
    totals = np.bincount(sorted_cat, weights=sorted_pop, minlength=n_categories)
    within = np.cumsum(sorted_pop) - np.repeat(np.cumsum(totals) - totals, np.bincount(
        sorted_cat, minlength=n_categories))
    shifted_cdf = sorted_cat + within / totals[sorted_cat]
    shifted_cdf[np.r_[np.flatnonzero(np.diff(sorted_cat)), len(sorted_cat) - 1]] = (
        sorted_cat[np.r_[np.flatnonzero(np.diff(sorted_cat)), len(sorted_cat) - 1]] + 1.0)

    preference_cdf = np.cumsum(preferences, axis=1)
    preference_cdf[:, -1] = 1.0
    activity = rng.lognormal(0.0, 1.0, size=users)
    counts = rng.multinomial(interactions, activity / activity.sum())
    user_ids = _user_ids(users)
    item_ids = catalogue["item_id"].to_numpy(dtype=object)
    start_ts = pd.Timestamp(start, tz="UTC").value // 1000  # microseconds
    period_us = days * 86_400 * 1_000_000

    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                        ("timestamp", pa.timestamp("us", tz="UTC")), ("event", pa.string()),
                        ("value", pa.float64())])
    interactions_path = out / "interactions.parquet"
    ends = np.cumsum(counts)
    with pq.ParquetWriter(interactions_path, schema) as writer:
        first_user = 0
        while first_user < users:
            done = ends[first_user - 1] if first_user else 0
            last_user = int(np.searchsorted(ends, done + CHUNK_ROWS, side="right"))
            last_user = max(last_user, first_user + 1)
            block = np.arange(first_user, min(last_user, users))
            rows_user = np.repeat(block, counts[block])
            first_user = block[-1] + 1
            if len(rows_user) == 0:
                continue
            writer.write_table(_chunk(rng, rows_user, user_segment, preference_cdf,
                                      shifted_cdf, by_category, global_cdf, exploration,
                                      user_ids, item_ids, start_ts, period_us, schema))
    items_path = out / "items.parquet"
    catalogue.to_parquet(items_path, index=False)
    summary = GeneratedData(str(interactions_path), str(items_path), int((counts > 0).sum()),
                            items, interactions, n_segments, n_categories,
                            round(time.perf_counter() - began, 2))
    logger.info("generated %s", summary)
    return summary


def check_sizes(users: int, items: int, interactions: int, days: int,
                start: str = "2024-01-01") -> None:
    """Refuse sizes the generator cannot draw, before anything is written.

    Raises:
        ConfigError: Naming the option.
    """
    if users < 1 or items < 1 or interactions < 1:
        raise ConfigError("--users, --items and --interactions must all be at least 1")
    if users > interactions:
        raise ConfigError(f"--users {users:,} is more than --interactions {interactions:,}: "
                          "most shoppers would have none; give fewer users or more "
                          "interactions")
    # A size no machine holds (the users' and items' arrays are drawn whole; rows are
    # written in chunks) ended in "memory ran out: train fewer candidates", exit 3.
    for option, size, most in (("--users", users, MAX_USERS_OR_ITEMS),
                               ("--items", items, MAX_USERS_OR_ITEMS),
                               ("--interactions", interactions, MAX_INTERACTIONS)):
        if size > most:
            raise ConfigError(f"{option} {size:,} is more than the generator draws "
                              f"({most:,} at most)")
    if days < 1:
        raise ConfigError("days must be at least 1")
    # Events after tomorrow are quarantined as timestamp_in_future: a period running past
    # today wrote data its own validation set aside (or rejected).
    first = pd.Timestamp(start, tz="UTC")
    most = int((pd.Timestamp.now(tz="UTC") - first) / pd.Timedelta(days=1))
    if days > most:
        raise ConfigError(f"--days {days:,} runs past today (the period starts on "
                          f"{first.date()}); give at most {most:,}")


def _user_ids(users: int) -> np.ndarray:
    width = len(str(users))
    return np.array([f"U{u:0{width}d}" for u in range(users)], dtype=object)


def _plant(rng: np.random.Generator, users: int, items: int, segments: int | None,
           categories: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray,
                                           np.ndarray]:
    """The planted structure, drawn first from the generator's stream.

    Returns:
        The catalogue, each item's category code, each item's popularity weight, the
        segments' category preferences (segments x categories) and each user's segment.
    """
    n_categories = min(categories or int(np.clip(items // 25, 4, 40)), items)
    n_segments = segments or max(2, min(12, n_categories))
    catalogue = make_items(rng, items, n_categories)
    category = pd.Categorical(catalogue["category"], categories=_category_names(n_categories)).codes
    popularity = 1.0 / np.power(rng.permutation(items) + 1.0, 0.9)
    preferences = rng.dirichlet(np.full(n_categories, 0.15), size=n_segments)
    user_segment = rng.integers(0, n_segments, size=users)
    return catalogue, np.asarray(category), popularity, preferences, user_segment


@dataclass
class PlantedModel:
    """The model :func:`generate` draws interactions from, for measuring a ceiling.

    Attributes:
        user_ids: Every user's id, in the generator's order.
        item_ids: Every item's id, in the generator's order.
        segments: Each user's taste segment.
        probabilities: Chance of each item for a row of each segment (segments x items).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    segments: np.ndarray
    probabilities: np.ndarray


def planted_model(users: int, items: int, seed: int = 0, segments: int | None = None,
                  categories: int | None = None, exploration: float = 0.15) -> PlantedModel:
    """What :func:`generate` planted for the same arguments, without writing anything.

    A row of a user of segment ``s`` is an item of category ``c`` with chance
    ``(1 - exploration) * preferences[s, c]``, then an item of that category by popularity;
    or, with chance ``exploration``, any item by popularity. Ranking a user's items by
    these chances is the best any model can do knowing the segment; from a history alone
    the best is the segment's posterior (``benchmarks/ceiling.py``).
    """
    rng = np.random.default_rng(seed)
    catalogue, category, popularity, preferences, user_segment = _plant(
        rng, users, items, segments, categories)
    within = popularity / np.bincount(category, weights=popularity)[category]
    probabilities = ((1.0 - exploration) * preferences[:, category] * within[None, :]
                     + exploration * (popularity / popularity.sum())[None, :])
    return PlantedModel(_user_ids(users), catalogue["item_id"].to_numpy(dtype=object), user_segment,
                        probabilities)


def _chunk(rng: np.random.Generator, rows_user: np.ndarray, user_segment: np.ndarray,
           preference_cdf: np.ndarray, shifted_cdf: np.ndarray, by_category: np.ndarray,
           global_cdf: np.ndarray, exploration: float, user_ids: np.ndarray,
           item_ids: np.ndarray, start_ts: int, period_us: int, schema: pa.Schema) -> pa.Table:
    n = len(rows_user)
    segment = user_segment[rows_user]
    draw = rng.random(n)
    # Inverse-CDF draw of a category per row from the row's segment preferences.
    cat = np.minimum((draw[:, None] > preference_cdf[segment]).sum(axis=1),
                     preference_cdf.shape[1] - 1)
    position = np.searchsorted(shifted_cdf, cat + rng.random(n), side="right")
    item = by_category[np.minimum(position, len(by_category) - 1)]
    explore = rng.random(n) < exploration
    item[explore] = np.minimum(np.searchsorted(global_cdf, rng.random(explore.sum())),
                               len(global_cdf) - 1)
    event = _EVENTS[np.searchsorted(np.cumsum(_EVENT_P), rng.random(n))]
    value = np.where(event == "purchase", rng.geometric(0.5, size=n), 1).astype(np.float64)
    ts = start_ts + rng.integers(0, period_us, size=n)
    return pa.table({
        "user_id": pa.array(user_ids[rows_user], pa.string()),
        "item_id": pa.array(item_ids[item], pa.string()),
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "event": pa.array(event, pa.string()),
        "value": pa.array(value, pa.float64()),
    }, schema=schema)


#: Star rating of a synthetic pair by its strongest event: a purchase says most.
_STARS = {"view": 3.0, "cart": 4.0, "purchase": 5.0}


def write_movielens(generated: GeneratedData, out_dir: str | Path) -> tuple[str, str]:
    """Write the generated data again in MovieLens' CSV layout (``ratings.csv``, ``movies.csv``).

    One rating per shopper and item, its stars from the strongest event of the pair (view 3,
    cart 4, purchase 5) and its time the pair's last event; ids renumbered from 1 as
    MovieLens' are, genres from the item categories. The planted taste segments survive the
    conversion, so a working model beats popularity on it as on the shop events; it lets a
    MovieLens-only tool (``benchmarks/published.py``) be tested without a download.

    Returns:
        The paths of ``ratings.csv`` and ``movies.csv``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = pd.read_parquet(generated.interactions_path)
    items = pd.read_parquet(generated.items_path)
    events["stars"] = events["event"].map(_STARS).astype(np.float64)
    pairs = events.groupby(["user_id", "item_id"], sort=True, observed=True).agg(
        rating=("stars", "max"), timestamp=("timestamp", "max")).reset_index()
    users = {user: number for number, user in enumerate(sorted(pairs["user_id"].unique()), 1)}
    movies = {item: number for number, item in enumerate(items["item_id"], 1)}
    ratings = pd.DataFrame({
        "userId": pairs["user_id"].map(users).astype(np.int64),
        "movieId": pairs["item_id"].map(movies).astype(np.int64),
        "rating": pairs["rating"],
        "timestamp": (pairs["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1),
    })
    ratings_path, movies_path = out / "ratings.csv", out / "movies.csv"
    ratings.to_csv(ratings_path, index=False)
    pd.DataFrame({"movieId": items["item_id"].map(movies).astype(np.int64),
                  "title": items["title"], "genres": items["category"]}
                 ).to_csv(movies_path, index=False)
    logger.info("wrote %d ratings of %d users in MovieLens layout to %s", len(ratings),
                len(users), out)
    return str(ratings_path), str(movies_path)
