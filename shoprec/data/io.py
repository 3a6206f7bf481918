"""Reading and writing tables from local paths or any fsspec URL (CSV, CSV.gz, Parquet)."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import fsspec
import numpy as np
import pandas as pd

from shoprec.data.schema import EXTRA_FIELDS
from shoprec.errors import ConfigError, DataError, InputNotFoundError
from shoprec.files import replace_whole

logger = logging.getLogger(__name__)

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# Formats people export to that shoprec does not read, with what they are.
_OTHER_FORMATS = {".json": "JSON", ".jsonl": "JSON lines", ".ndjson": "JSON lines",
                  ".xlsx": "Excel", ".xlsm": "Excel", ".xls": "Excel", ".ods": "OpenDocument",
                  ".feather": "Feather", ".arrow": "Arrow IPC", ".avro": "Avro",
                  ".orc": "ORC", ".db": "database", ".sqlite": "SQLite"}


def is_parquet(path: str) -> bool:
    """Return whether ``path`` names a Parquet file (by its suffix)."""
    return PurePosixPath(path.split("?")[0]).name.lower().endswith(_PARQUET_SUFFIXES)


def path_exists(path: str) -> bool:
    """Return whether a local path or fsspec URL exists."""
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
        return bool(fs.exists(fs_path))
    except (OSError, ValueError, ImportError):
        return False


def check_writable_folder(path: str | Path, name: str) -> None:
    """Refuse an output folder that is a file or cannot be written, before any work.

    The folder is created now (it would be anyway): trying is the only check that also
    holds for root, for read-only mounts and for pseudo file systems like /proc.

    Args:
        path: The folder; a URL (``s3://...``) is not checked here, but when written.
        name: The option or field that gave it, for the message.

    Raises:
        ConfigError: It, or a folder above it, is a file, or it cannot be written.
    """
    import tempfile

    if "://" in str(path):
        return
    path = Path(path)  # as the writers take it: "~" is the shell's to expand
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        inside = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{name} {path} is a file{inside}; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".shoprec-write-check-")
        probe.close()
    except OSError as exc:
        raise ConfigError(f"{name} {path} cannot be written ({exc.strerror or exc}); choose "
                          "another folder") from None


def check_readable(path: str, what: str) -> None:
    """Refuse a path that does not exist, is a folder or is empty, before any work.

    Args:
        path: Local path or fsspec URL.
        what: What the file holds, for the message (``"interactions"``, ``"items"``).

    Raises:
        InputNotFoundError: Nothing at ``path``.
        DataError: A folder, an empty file, or a URL fsspec cannot open.
    """
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
    except (ValueError, ImportError) as exc:
        raise DataError(f"cannot open the {what} file {path!r}: {exc}") from exc
    if not fs.exists(fs_path):
        raise InputNotFoundError(
            f"the {what} file {path!r} does not exist; check the path"
            + ("" if "://" in path or os.path.isabs(path) else
               f" (relative paths are taken from the current folder, {os.getcwd()})")
        )
    if fs.isdir(fs_path):
        raise DataError(f"the {what} path {path!r} is a folder; pass the file inside it")
    if fs.size(fs_path) == 0:
        raise DataError(f"the {what} file {path!r} is empty (0 bytes); it needs a header and rows")


def read_table(
    path: str,
    *,
    what: str = "interactions",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    header: bool = True,
    names: list[str] | None = None,
    inherited_delimiter: str | None = None,
) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file into a DataFrame.

    CSV cells are read as strings so that nothing is coerced or lost on the way in; typing
    happens in cleaning, where a value that does not parse is quarantined with a reason.

    Args:
        path: Local path or fsspec URL.
        what: What the file is, for error messages ("interactions", "items").
        delimiter: CSV field separator; ``None`` means a comma.
        encoding: Text encoding of a CSV file.
        header: Whether the CSV file has a header line.
        names: Column names for a CSV file without a header.
        inherited_delimiter: The delimiter when neither ``delimiter`` nor the file's own
            ``sep=`` line names one (another file's, given for both).

    Returns:
        The table, with a default RangeIndex.

    Raises:
        DataError: The file is missing, empty, not decodable or not parseable.
    """
    check_readable(path, what)
    _refuse_other_formats(path, what)
    if is_parquet(path):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises a variety of types for corrupt files
            raise DataError(f"cannot read the {what} file {path!r} as Parquet: {exc}"
                            f"{_sniff_hint(path, encoding, what)}") from exc
        _refuse_duplicate_columns([str(c) for c in frame.columns], path, what)
        return _names_stripped(frame).reset_index(drop=True)
    declared = _declared_separator(path, delimiter, encoding, what) if header else None
    delimiter = declared or delimiter or inherited_delimiter
    named = _csv_header(path, delimiter, encoding) if header else []
    _refuse_duplicate_columns(named, path, what)

    def read(columns: list[str] | None, named_here: bool = header) -> pd.DataFrame:
        # A header row counts its fields for pandas, whatever ``names`` says: the long
        # rows' wider reading skips that line and names every column itself.
        skip = (1 if declared else 0) + (1 if header and not named_here else 0)
        return _read_csv(path, what=what, delimiter=delimiter or ",", encoding=encoding,
                         skiprows=skip or None, header=named_here, names=columns)

    first_row_line = 1 + (1 if header else 0) + (1 if declared else 0)
    try:
        frame = read(names)
    except pd.errors.ParserError as exc:
        ragged = _RAGGED.search(str(exc))
        hint = _sniff_hint(path, encoding, what)
        if ragged and EXTRA_FIELDS not in named and not hint:
            return _names_stripped(_read_ragged(
                read, list(names or named), int(ragged.group(3)), what=what, path=path,
                delimiter=delimiter or ",", first_line=first_row_line))
        if hint:
            raise DataError(f"cannot parse the {what} file {path!r} as CSV{hint}") from exc
        raise _unparseable(path, what, exc) from exc
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas took a first data row longer than the header for a sign that every row
        # starts with an index. When a few rows are that long (their last fields filled,
        # most rows' empty), they are the long rows; when most are, every row has a field
        # the header does not name (row numbers), which _unnamed_fields refuses.
        extra = frame.index.nlevels
        filled = frame.iloc[:, frame.shape[1] - extra:].notna().any(axis=1).to_numpy()
        known = list(names or named)
        if filled.any() and filled.mean() < 0.5 and EXTRA_FIELDS not in known:
            return _names_stripped(_read_ragged(
                read, known, len(known) + extra, what=what, path=path,
                delimiter=delimiter or ",", first_line=first_row_line))
        frame = _unnamed_fields(frame, path, what, delimiter or ",")
    return _names_stripped(frame)


def _read_csv(path: str, *, what: str, delimiter: str, encoding: str, skiprows: int | None,
              header: bool, names: list[str] | None) -> pd.DataFrame:
    """Read with pandas' C reader and shoprec's settings; its errors as :class:`DataError`.

    Raises:
        DataError: The file cannot be decoded, is empty, or cannot be opened.
        pandas.errors.ParserError: A row that does not fit (the caller decides).
    """
    try:
        return pd.read_csv(
            path,
            sep=delimiter,
            skiprows=skiprows,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
            header=0 if header else None,
            names=names,
            compression="infer",
            skipinitialspace=False,
        )
    except UnicodeError as exc:  # a decoding error, or utf-16's missing byte-order mark
        hint = _sniff_hint(path, encoding, what) or _utf8_hint(path, encoding, what) or \
            (f"; pass the file's encoding, e.g. {_option('encoding', what)} cp1252 (what "
             "Excel on Windows writes; latin-1 also reads it, but turns its € into \\x80)")
        # (Not the byte's position: pandas decodes in blocks, and counts from the block.)
        raise DataError(f"the {what} file {path!r} is not valid {encoding} text "
                        f"({getattr(exc, 'reason', exc)}){hint}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"the {what} file {path!r} has no header and no rows") from exc
    except (OSError, EOFError) as exc:  # e.g. a truncated or fake .gz
        raise DataError(f"cannot read the {what} file {path!r}: {exc}") from exc
    except ValueError as exc:  # pandas' archives: "Multiple files found in ZIP file" ...
        if not re.search(r"files? found in (ZIP file|TAR archive)", str(exc), re.IGNORECASE):
            raise
        raise DataError(f"cannot read the {what} file {path!r}: {exc}; an archive must hold "
                        "exactly one data file (a zip made on a Mac also holds __MACOSX/ "
                        "files: zip it with `zip -X`, or pass the file itself)") from exc


#: pandas' C parser on a row with more fields than the header names.
_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
#: The widest rows read: past it a file is no table with a few long rows.
_MOST_EXTRA_FIELDS = 1000
#: Names the columns added for the long rows' surplus while they are read.
_SURPLUS = "\x00shoprec-surplus-"


def _read_ragged(read: Callable[[list[str], bool], pd.DataFrame], names: list[str], saw: int,
                 *,
                 what: str, path: str, delimiter: str, first_line: int) -> pd.DataFrame:
    """Read a CSV some of whose rows have more fields than the header names.

    The rows are read again with unnamed columns added for the widest row's surplus, so
    each long row keeps its place (its ``source_row`` stays the record's) with the surplus
    in :data:`EXTRA_FIELDS`, where cleaning quarantines it. One stray delimiter in a text
    field used to reject the whole file. A row whose surplus is empty (a delimiter at the
    end of some lines) is read as the row it is.

    Args:
        read: Reads the file with the given column names, and whether its first line
            names them (``False``: the header line is skipped).
        names: The header's names (or the names given to a file without one).
        saw: The field count of a row longer than ``names``.
        what: What the file holds, for messages.
        path: The file.
        delimiter: Its delimiter, which joins the surplus fields.
        first_line: The line of the file's first row, from which the log counts (a row
            per line).

    Raises:
        DataError: Rows wider than :data:`_MOST_EXTRA_FIELDS` extra fields.
    """
    width = len(names)
    extra = saw - width
    while True:
        if extra > _MOST_EXTRA_FIELDS:
            raise DataError(f"a row of the {what} file {path!r} has {extra + width:,} fields "
                            f"against the header's {width:,}; check the delimiter "
                            f"({_option('delimiter', what)})")
        surplus = [f"{_SURPLUS}{i}" for i in range(extra)]
        try:
            frame = read([*names, *surplus], False)
            break
        except pd.errors.ParserError as exc:
            wider = _RAGGED.search(str(exc))
            if not wider or int(wider.group(3)) - width <= extra:
                raise _unparseable(path, what, exc) from exc
            # Wider still: at least twice the surplus read, so rows widening down the
            # file cost a few readings, not one per width.
            extra = max(int(wider.group(3)) - width, 2 * extra)
    cells = frame[surplus].to_numpy(dtype=object)
    given = ~pd.isna(cells)
    long = np.flatnonzero(given.any(axis=1))
    joined = np.full(len(frame), np.nan, dtype=object)
    for row in long:
        last = int(np.flatnonzero(given[row])[-1])
        joined[row] = delimiter.join("" if pd.isna(c) else str(c) for c in cells[row, :last + 1])
    frame = frame.drop(columns=surplus)
    frame[EXTRA_FIELDS] = pd.Series(joined, index=frame.index).astype(frame.dtypes.iloc[0])
    if len(long):
        logger.warning("%d row(s) of the %s file %s have more than its %d fields (the first "
                       "near line %d); they are quarantined as extra_fields, with the "
                       "surplus in the column %s", len(long), what, path, width,
                       first_line + int(long[0]), EXTRA_FIELDS)
    else:  # only empty fields past the header's: nothing to set aside
        frame = frame.drop(columns=EXTRA_FIELDS)
    return frame


def _unparseable(path: str, what: str, error: Exception) -> DataError:
    """The error for a CSV file pandas cannot tokenise, with what to check."""
    return DataError(f"cannot parse the {what} file {path!r} as CSV: {error}. Check the "
                     f"delimiter ({_option('delimiter', what)}) and that quoted fields are "
                     "closed")


def _option(name: str, what: str) -> str:
    """The option that sets ``name`` (delimiter, encoding) for the file holding ``what``."""
    return f"--items-{name}" if what == "items" else f"--{name}"


def _names_stripped(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its column names stripped.

    A header written ``user_id, item_id, ...`` names the columns without their spaces, as
    the duplicate check reads them.
    """
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    return frame


def _unnamed_fields(frame: pd.DataFrame, path: str, what: str, delimiter: str
                    ) -> pd.DataFrame:
    """The table read from rows with more fields than the header names, in every row.

    pandas took the first fields for an index. A delimiter at the end of every line (empty
    last fields) is dropped; a field with values and no name is refused, since which one
    it is cannot be told.
    """
    extra = frame.index.nlevels
    names = list(frame.columns)
    if extra <= len(names) and frame.iloc[:, len(names) - extra:].isna().all(axis=None):
        values = frame.reset_index().iloc[:, :len(names)]
        values.columns = names
        logger.info("the %s file %s ends every line with a delimiter: the empty last field "
                    "is ignored", what, path)
        return values
    header = str(names[0]) if len(names) == 1 else ""
    other = next((d for d in (";", "\t", "|") if d in header and d != delimiter), None)
    if other is not None:  # a ';' file whose cells hold commas ("1,50"), read with ','
        shown = "'\\t'" if other == "\t" else repr(other)
        raise DataError(f"the {what} file {path!r} was read with the delimiter "
                        f"{delimiter!r}, but its header {header[:80]!r} looks delimited by "
                        f"{shown}: pass "
                        f"{_option('delimiter', what)} {shown}")
    raise DataError(
        f"every row of the {what} file {path!r} has {len(names) + extra} fields, but its "
        f"header names {len(names)} columns: a column has values and no name (row numbers "
        "or an index whose header cell is missing, or a stray field at the end of every "
        "line). Name every column in the header line, or remove the unnamed one")


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Write ``frame`` to a Parquet file at a local path or fsspec URL, making folders."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    parent = fs_path.rstrip("/").rpartition("/")[0]  # fsspec paths use "/" everywhere
    if parent:
        fs.makedirs(parent, exist_ok=True)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols:
        frame.to_parquet(path, index=False)  # an object store writes an object whole
        return
    replace_whole(fs_path, lambda draft: frame.to_parquet(draft, index=False))


def column_names(path: str, delimiter: str | None = None, encoding: str = "utf-8"
                 ) -> list[str]:
    """A CSV or Parquet file's column names, its rows unread ([] when it cannot be read)."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        try:
            with fsspec.open(path, "rb") as handle:
                return list(pq.read_schema(handle).names)
        except Exception:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            return []
    return _csv_header(path, delimiter, encoding)


def _csv_header(path: str, delimiter: str | None, encoding: str) -> list[str]:
    """The header line's names as written (pandas would rename a repeated one ``x.1``).

    Read as text in the file's encoding, as pandas reads it: a byte-order mark is dropped,
    and any line ending (a line feed, a carriage return and line feed, or a carriage return
    alone) ends the header.
    """
    import csv

    lines = _first_lines(path, encoding, 2)
    declared = _SEPARATOR_LINE.match(lines[0]) if lines else None
    if declared:  # Excel's "sep=;": the header is the next line
        delimiter, lines = delimiter or declared.group(1), lines[1:]
    if not lines:
        return []
    try:
        names = next(csv.reader(lines[:1], delimiter=delimiter or ","), [])
    except csv.Error:
        return []
    return [name.lstrip("\ufeff") for name in names]


# The line Excel writes (and reads) first to name a CSV file's separator: ``sep=;``.
_SEPARATOR_LINE = re.compile(r'^\ufeff?"?sep=(.)"?\s*$', re.IGNORECASE)


def _first_lines(path: str, encoding: str, count: int) -> list[str]:
    """The first ``count`` lines of a CSV file as text ([] when it cannot be read).

    Read in the file's encoding, as pandas reads it: a byte-order mark is dropped, and any
    line ending (a line feed, a carriage return and line feed, or a carriage return alone)
    ends a line.
    """
    if encoding.lower().replace("-", "").replace("_", "") == "utf8":
        encoding = "utf-8-sig"  # pandas drops a UTF-8 byte-order mark too
    lines: list[str] = []
    try:
        with fsspec.open(path, "rt", compression="infer", encoding=encoding) as handle:
            for line in handle:
                lines.append(line.rstrip("\r\n"))
                if len(lines) == count:
                    break
    except (OSError, EOFError, ValueError, LookupError):
        return []  # the full read reports what is wrong with the file (UnicodeError too)
    return lines


def _declared_separator(path: str, delimiter: str | None, encoding: str, what: str
                        ) -> str | None:
    """The separator a CSV file names in an Excel ``sep=`` first line, or None.

    Raises:
        DataError: ``--delimiter`` names another one.
    """
    option = _option("delimiter", what)
    lines = _first_lines(path, encoding, 1)
    found = _SEPARATOR_LINE.match(lines[0]) if lines else None
    if found is None:
        return None
    declared = found.group(1)
    if delimiter is not None and delimiter != declared:
        raise DataError(f"the {what} file {path!r} names its separator in its first line "
                        f"({lines[0].strip()!r}, as Excel writes), but {option} is "
                        f"{delimiter!r}; leave {option} out, or pass {option} {declared!r}")
    logger.info("the %s file %s names its separator %r in its first line; that line is "
                "skipped", what, path, declared)
    return declared


def _refuse_duplicate_columns(columns: list[str], path: str, what: str) -> None:
    counts = Counter(c.strip() for c in columns)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise DataError(f"the {what} file {path!r} has the column(s) {repeated} more than "
                        "once; shoprec would have to pick one silently. Rename or drop the "
                        "extra column(s)")


def _refuse_other_formats(path: str, what: str) -> None:
    """Refuse a file in a format shoprec does not read.

    Told by its name, or for office documents (zip archives) by its first bytes, before
    it is misread as CSV.
    """
    name = PurePosixPath(path.split("?")[0]).name.lower()
    kind = next((kind for suffix, kind in _OTHER_FORMATS.items() if name.endswith(suffix)), None)
    if kind is None and not is_parquet(path):
        try:
            with fsspec.open(path, "rb") as handle:
                head = handle.read(2048)
        except (OSError, ValueError):
            return
        if head.startswith(b"PK\x03\x04") and b"[Content_Types].xml" in head:
            kind = "Excel (or another office-document)"
    if kind is not None:
        raise DataError(f"the {what} file {path!r} is in {kind} format; shoprec reads CSV "
                        "(.csv, also compressed: .csv.gz, .csv.zip, ...) and Parquet (.parquet): "
                        "export it to one of those")


def _sniff_hint(path: str, encoding: str, what: str = "interactions") -> str:
    """What the file's first bytes say it really is, as a hint ('' when nothing useful)."""
    try:
        with fsspec.open(path, "rb") as handle:
            head = handle.read(4)
        if head[:2] == b"\x1f\x8b":
            with fsspec.open(path, "rb", compression="gzip") as handle:
                inner = handle.read(4)
        else:
            inner = b""
    except (OSError, EOFError, ValueError):
        return ""
    if head == b"PAR1" and not is_parquet(path):
        return "; it is a Parquet file: give it a .parquet name"
    if inner == b"PAR1":
        return "; it is a gzip-compressed Parquet file: decompress it (gunzip) and read the " \
               ".parquet file"
    if head[:2] == b"\x1f\x8b" and not path.split("?")[0].lower().endswith(".gz"):
        return "; it is gzip-compressed: give it a name ending in .gz (e.g. .csv.gz) or " \
               "decompress it (gunzip)"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") and "16" not in encoding:
        return "; it is UTF-16 text (it starts with a UTF-16 byte-order mark): pass " \
               f"{_option('encoding', what)} utf-16"
    if head[:3] == b"\xef\xbb\xbf" and "utf" not in encoding.lower():
        return f"; it starts with a UTF-8 byte-order mark: pass {_option('encoding', what)} " \
               "utf-8-sig"
    return ""


def _utf8_hint(path: str, encoding: str, what: str) -> str:
    """After a decoding error: '; its start reads as UTF-8...' when it does, else ''.

    A valid UTF-8 file given another encoding was told to pass cp1252, the wrong way. Only
    for a decoding error: a cp1252 file whose first 64 KB are plain ASCII reads as UTF-8
    there too.
    """
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig") \
            or not _reads_as_utf8(path):
        return ""
    return f"; its start reads as UTF-8: leave out {_option('encoding', what)} (or pass utf-8)"


def _reads_as_utf8(path: str, size: int = 1 << 16) -> bool:
    """Whether the first ``size`` bytes of the file (decompressed) are UTF-8 text."""
    import codecs

    try:
        with fsspec.open(path, "rb", compression="infer") as handle:
            head = handle.read(size)
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except (OSError, EOFError, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    return True


def fingerprint(paths: list[str | None], extra: str = "") -> str:
    """SHA-256 over the bytes of the given files (missing entries skipped) and ``extra``.

    Used as the data's identity: for caching data preparation and as a registry tag. Each
    file counts by its name (which can decide how it is read: ``u.data``) and its bytes,
    not by the folder it was reached through: the same file given as ``shop.csv``,
    ``./shop.csv`` or its absolute path had four identities, and versions trained on the
    same data were tagged as trained on new data. (The preparation's cache is still keyed
    on the path as given.)
    """
    import hashlib

    digest = hashlib.sha256(extra.encode())
    for path in paths:
        if not path:
            continue
        digest.update(file_name(path).encode() + b"\0")
        check_readable(path, "input")
        with fsspec.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def file_name(path: str) -> str:
    """The last part of a path or URL, without its query (``s3://b/x/shop.csv?v=1``: shop.csv)."""
    import posixpath

    return posixpath.basename(path.split("?")[0].replace("\\", "/"))
