"""Item content features: TF-IDF over text, one-hot categories and brands, price buckets.

Fitted with scikit-learn, stored as plain JSON and ``.npy`` (vocabularies, idf weights, bin
edges), and applied with fixed vocabularies, so a saved index reads back without pickles
and a search query is vectorised exactly like the catalogue.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)


def l2_rows(matrix: Any, **kwargs: Any) -> Any:
    """Rows scaled to unit L2 norm (scikit-learn's ``normalize``).

    scikit-learn is imported here, not with the module: it takes over a second to import,
    and loading a published model to answer one request needs none of it.
    """
    from sklearn.preprocessing import normalize

    return normalize(matrix, **kwargs)

#: Word uni- and bi-grams; character 3-5-grams within word boundaries (typos, "T-LIGHT" vs
#: "TLIGHT"). Tokens keep letters and digits only, so punctuation variants match.
_WORD = dict(analyzer="word", ngram_range=(1, 2), lowercase=True,
             token_pattern=r"(?u)\b\w+\b", min_df=1)
_CHAR = dict(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, min_df=1)
_TEXT_FIELDS = ("title", "description", "category", "brand")


def item_texts(items: pd.DataFrame) -> list[str]:
    """One text per item: title, description, category and brand joined."""
    if "text" in items:
        return items["text"].fillna("").astype(str).tolist()
    empty = pd.Series("", index=items.index, dtype=object)
    parts = [items[c].fillna("").astype(str) if c in items else empty for c in _TEXT_FIELDS]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + " " + part
    return joined.str.replace(r"\s+", " ", regex=True).str.strip().tolist()


#: How texts are put in one form before they are split (saved with the features; an index
#: written before forms existed reads as 0, and its queries are read as it was built):
#: 0, as written; 1, :func:`fold_text`, Chinese, Japanese and Korean characters one word
#: each for the word block.
TEXT_FORM = 1

#: Accents on Latin letters (after NFD): "café" and "cafe", "İstanbul" and "istanbul" meet.
#: Marks on other scripts are kept: on kana (the voicing marks), Indic vowel signs, they
#: make another word.
_LATIN_MARKS = re.compile(r"(?<=[A-Za-z\u00C0-\u024F\u1E00-\u1EFF])[\u0300-\u036F]+")
#: Han, kana and Hangul: written without spaces between words, so each is a word of its
#: own and the word block's bigrams ("茶 碗") find a two-character word inside a title.
_CJK = re.compile(r"([\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF"
                  r"\uAC00-\uD7AF])")


def fold_text(text: str) -> str:
    """``text`` in the one form that search compares.

    Compatibility characters (full-width letters, Arabic presentation forms) become their
    ordinary ones (NFKC), case is folded ("ß" as "ss"), and Latin letters lose their
    accents, whether the input was composed or decomposed.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFC", _LATIN_MARKS.sub("", unicodedata.normalize("NFD",
                                                                                  folded)))


def _forms(texts: list[str], form: int) -> tuple[list[str], list[str]]:
    """The texts the word block and the character block read, in ``form``."""
    if form == 0:
        return texts, _clean_char_text(texts)
    folded = [fold_text(t) for t in texts]
    return [_CJK.sub(r" \1 ", t) for t in folded], _clean_char_text(folded)


def _clean_char_text(texts: list[str]) -> list[str]:
    # Hyphens and other punctuation split character n-grams differently; drop them so
    # "T-LIGHT" and "TLIGHT" share their n-grams.
    return [" ".join("".join(ch if ch.isalnum() or ch.isspace() else "" for ch in t).split())
            for t in texts]


class _FixedTfidf:
    """TF-IDF with a fixed vocabulary and idf weights (sublinear tf, L2 rows)."""

    def __init__(self, settings: dict[str, Any], vocabulary: dict[str, int],
                 idf: np.ndarray) -> None:
        self.settings = settings
        self.vocabulary = vocabulary
        self.idf = idf
        counter_settings = {k: v for k, v in settings.items() if k != "min_df"}
        from sklearn.feature_extraction.text import CountVectorizer

        self._counter = CountVectorizer(vocabulary=vocabulary, **counter_settings)

    @classmethod
    def fit_counts(cls, settings: dict[str, Any],
                   texts: list[str]) -> tuple[_FixedTfidf, sp.csr_matrix]:
        """Fitted on ``texts``, with their term counts: each text is analysed once.

        The vocabulary and idf weights are those of scikit-learn's ``TfidfVectorizer``
        (sublinear tf): it fits its idf on exactly these counts.
        """
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

        counter = CountVectorizer(**settings)
        counts = sp.csr_matrix(counter.fit_transform(texts))
        # Sorting the vocabulary renumbers the terms and leaves each row's out of order;
        # sorted again, the counts are the very arrays the fixed vocabulary's transform
        # gives, so fitted rows and rows of a saved index are made from the same input.
        counts.sort_indices()
        idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
        vocabulary = {term: int(i) for term, i in counter.vocabulary_.items()}
        return cls(settings, vocabulary, idf.astype(np.float32)), counts

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """TF-IDF rows of ``texts`` in the fixed vocabulary."""
        return self.weigh(self._counter.transform(texts))

    def weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """TF-IDF rows from term counts in this vocabulary (sublinear tf, L2 rows)."""
        counts = counts.astype(np.float32)
        counts.data = 1.0 + np.log(counts.data)
        return l2_rows(counts @ sp.diags(self.idf), norm="l2", copy=False).tocsr()

    def to_json(self) -> dict[str, Any]:
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}
        return {"settings": settings, "vocabulary": self.vocabulary}

    @classmethod
    def from_json(cls, data: dict[str, Any], idf: np.ndarray) -> _FixedTfidf:
        settings = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in data["settings"].items()}
        return cls(settings, data["vocabulary"], idf)


class ItemFeatures:
    """Content features of a catalogue, aligned with an item index.

    Blocks, each L2-normalised and weighted, then the rows normalised: word TF-IDF, character
    TF-IDF, one-hot category, one-hot brand, one-hot price bucket (quantiles of the z-scored
    log price).

    Args:
        word_weight: Weight of the word TF-IDF block.
        char_weight: Weight of the character n-gram block.
        category_weight: Weight of the category block.
        brand_weight: Weight of the brand block.
        price_weight: Weight of the price-bucket block.
        price_buckets: Number of price buckets.
    """

    #: The :data:`TEXT_FORM` the vocabularies were built in; features pickled before
    #: forms existed read as 0 (set for new features in ``__init__``).
    text_form: int = 0

    def __init__(self, word_weight: float = 1.0, char_weight: float = 1.0,
                 category_weight: float = 0.5, brand_weight: float = 0.3,
                 price_weight: float = 0.2, price_buckets: int = 5) -> None:
        self.word_weight = word_weight
        self.char_weight = char_weight
        self.category_weight = category_weight
        self.brand_weight = brand_weight
        self.price_weight = price_weight
        self.price_buckets = price_buckets
        self.text_form = TEXT_FORM

    def fit(self, items: pd.DataFrame) -> ItemFeatures:
        """Learn vocabularies, idf weights, categories, brands and price edges."""
        self._fit(items, item_texts(items))
        return self

    def fit_transform(self, items: pd.DataFrame) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Fit on ``items``; their feature rows and their texts' query vectors.

        The same as :meth:`fit`, then :meth:`transform` and :meth:`query_vectors` of the
        items' texts, with each text analysed once instead of three times (on a catalogue
        of 50,000 items the analysis is most of a content fit's seconds).

        Returns:
            The items' feature rows (:meth:`transform`) and the vectors of their texts as
            search queries (:meth:`query_vectors`).
        """
        texts = item_texts(items)
        word, char = self._fit(items, texts)
        return self._rows(items, word, char), self._text_rows(word, char)

    def _fit(self, items: pd.DataFrame,
             texts: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Fit every block; the weighted word and character rows of ``texts``."""
        words, chars = _forms(texts, self.text_form)
        self.word_, word_counts = _FixedTfidf.fit_counts(_WORD, words)
        self.char_, char_counts = _FixedTfidf.fit_counts(_CHAR, chars)
        self.categories_ = _levels(items, "category")
        self.brands_ = _levels(items, "brand")
        log_price = _log_price(items)
        known = log_price[np.isfinite(log_price)]
        self.price_mean_ = float(known.mean()) if len(known) else 0.0
        self.price_std_ = float(known.std()) if len(known) > 1 and known.std() > 0 else 1.0
        z = (known - self.price_mean_) / self.price_std_
        quantiles = np.linspace(0, 1, self.price_buckets + 1)[1:-1]
        self.price_edges_ = np.unique(np.quantile(z, quantiles)) if len(z) else np.array([])
        return self.word_.weigh(word_counts), self.char_.weigh(char_counts)

    def transform(self, items: pd.DataFrame) -> sp.csr_matrix:
        """Feature rows of ``items`` (one per row, L2-normalised)."""
        words, chars = _forms(item_texts(items), self.text_form)
        return self._rows(items, self.word_.transform(words), self.char_.transform(chars))

    def query_vectors(self, queries: list[str]) -> sp.csr_matrix:
        """Vectors of search queries in the text blocks (zeros elsewhere), L2-normalised."""
        words, chars = _forms(queries, self.text_form)
        return self._text_rows(self.word_.transform(words), self.char_.transform(chars))

    def _rows(self, items: pd.DataFrame, word: sp.csr_matrix,
              char: sp.csr_matrix) -> sp.csr_matrix:
        """Feature rows from the items' word and character TF-IDF rows."""
        blocks = [self.word_weight * word, self.char_weight * char,
                  self.category_weight * _one_hot(items, "category", self.categories_),
                  self.brand_weight * _one_hot(items, "brand", self.brands_),
                  self.price_weight * self._price_block(items)]
        return l2_rows(sp.hstack(blocks, format="csr"), norm="l2", copy=False).astype(
            np.float32)

    def _text_rows(self, word: sp.csr_matrix, char: sp.csr_matrix) -> sp.csr_matrix:
        """Query vectors from word and character TF-IDF rows (zeros in the other blocks)."""
        n_rest = len(self.categories_) + len(self.brands_) + len(self.price_edges_) + 1
        blocks = [self.word_weight * word, self.char_weight * char,
                  sp.csr_matrix((word.shape[0], n_rest), dtype=np.float32)]
        return l2_rows(sp.hstack(blocks, format="csr"), norm="l2", copy=False).astype(
            np.float32)

    def _price_block(self, items: pd.DataFrame) -> sp.csr_matrix:
        log_price = _log_price(items)
        width = len(self.price_edges_) + 1
        known = np.isfinite(log_price)
        bucket = np.searchsorted(self.price_edges_,
                                 (log_price[known] - self.price_mean_) / self.price_std_)
        rows = np.flatnonzero(known)
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, bucket)),
                             shape=(len(items), width))

    def save(self, folder: str | Path) -> None:
        """Write the fitted features as JSON and ``.npy`` files."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "word_idf.npy", self.word_.idf)
        np.save(path / "char_idf.npy", self.char_.idf)
        np.save(path / "price_edges.npy", self.price_edges_)
        state = {
            "params": {"word_weight": self.word_weight, "char_weight": self.char_weight,
                       "category_weight": self.category_weight,
                       "brand_weight": self.brand_weight, "price_weight": self.price_weight,
                       "price_buckets": self.price_buckets},
            "word": self.word_.to_json(), "char": self.char_.to_json(),
            "categories": self.categories_, "brands": self.brands_,
            "price_mean": self.price_mean_, "price_std": self.price_std_,
            "text_form": self.text_form,
        }
        (path / "features.json").write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> ItemFeatures:
        """Read features written by :meth:`save`."""
        path = Path(folder)
        state = json.loads((path / "features.json").read_text(encoding="utf-8"))
        features = cls(**state["params"])
        features.word_ = _FixedTfidf.from_json(state["word"], np.load(path / "word_idf.npy"))
        features.char_ = _FixedTfidf.from_json(state["char"], np.load(path / "char_idf.npy"))
        features.categories_ = state["categories"]
        features.brands_ = state["brands"]
        features.price_mean_ = state["price_mean"]
        features.price_std_ = state["price_std"]
        features.price_edges_ = np.load(path / "price_edges.npy")
        features.text_form = int(state.get("text_form", 0))
        return features


def _levels(items: pd.DataFrame, column: str) -> list[str]:
    if column not in items:
        return []
    values = items[column].dropna().astype(str)
    return sorted(set(values[values != ""]))


def _one_hot(items: pd.DataFrame, column: str, levels: list[str]) -> sp.csr_matrix:
    index = {level: i for i, level in enumerate(levels)}
    values = items[column].astype("string").fillna("").tolist() if column in items else [""] * len(
        items)
    codes = np.array([index.get(v, -1) for v in values], dtype=np.int64)
    rows = np.flatnonzero(codes >= 0)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[rows])),
                         shape=(len(items), len(levels)))


def _log_price(items: pd.DataFrame) -> np.ndarray:
    if "price" not in items:
        return np.full(len(items), np.nan)
    price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(price > 0, np.log(price), np.nan)
