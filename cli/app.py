"""The ``shoprec`` command line.

Exit codes: 0 success, 1 data rejected by validation (or unusable), 2 usage error, 3 any
other failure. A user mistake prints a message, never a bare traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from shoprec.config import DEFAULT_MODEL_NAME, BatchConfig, new_registry_name, registry_name
from shoprec.errors import (
    ConfigError,
    DataError,
    DataValidationError,
    InputNotFoundError,
    RegistryError,
    ShopRecError,
)
from shoprec.runtime import stopped_by_signal

if TYPE_CHECKING:
    from shoprec.config import DataConfig

app = typer.Typer(
    name="shoprec",
    help="Recommendation pipeline for online shops: generate, validate, train, promote, "
    "roll back, recommend and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables stay readable when output goes to a file or a CI log (rich assumes 80 columns).
# Markup and emoji codes off: what is printed holds the shop's own text (titles, ids,
# queries, paths, the values in an error), which rich would read as style tags ("mug
# [large]" lost its "[large]", "[/x]" ended the command in a traceback) or emoji (":100:").
# Styles are given as Text instead.
EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_FAILURE, EXIT_REFUSED = 0, 1, 2, 3, 4
#: What a shell reports for a command whose output pipe closed (128 + SIGPIPE).
EXIT_CLOSED_PIPE = 141


def _closed_pipe() -> None:
    """End the command whose reader went away (`| head`): exit 141, not "rejected".

    rich and click both end it with exit 1, which a script reads as data rejected. The
    rest of the output goes nowhere rather than failing again at exit.
    """
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(EXIT_CLOSED_PIPE)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        _closed_pipe()


# Off a terminal, 120 columns unless COLUMNS says otherwise (a scheduler's log may be wider).
console = _Console(width=None if Console().is_terminal or os.environ.get("COLUMNS") else 120,
                   markup=False, emoji=False)
err_console = _Console(stderr=True, soft_wrap=True, markup=False, emoji=False)


def _styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs, none of it read as markup."""
    return Text.assemble(*parts)
F = TypeVar("F", bound=Callable[..., Any])

InteractionsOpt = Annotated[str | None, typer.Option(
    "--interactions", help="Interactions file (CSV, CSV.gz, Parquet; path or fsspec URL). "
    "Default: the bundled Online Retail sample.")]
ItemsOpt = Annotated[str | None, typer.Option("--items", help="Items file.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="generic, online-retail or movielens; default: detected.")]
MapOpt = Annotated[list[str] | None, typer.Option(
    "--map", help="generic format: canonical=column, e.g. --map user_id=customer,item_id=sku; "
    "items.NAME=column for the items file alone, e.g. items.item_id=code.")]
DelimiterOpt = Annotated[str | None, typer.Option("--delimiter", help="CSV delimiter.")]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="CSV text encoding.")]
DefaultEventOpt = Annotated[str | None, typer.Option(
    "--default-event", help="The event of rows without an event column: purchase (the "
    "default), or rating for a file of ratings (user, item, stars), view or cart.")]
DecimalOpt = Annotated[str | None, typer.Option(
    "--decimal", help="Decimal mark of numbers written as text: ',' for 1,50 and 1.234,50 "
    "(default '.').")]
ItemsDelimiterOpt = Annotated[str | None, typer.Option(
    "--items-delimiter", help="The items file's CSV delimiter (default: --delimiter).")]
ItemsEncodingOpt = Annotated[str | None, typer.Option(
    "--items-encoding", help="The items file's text encoding (default: --encoding).")]
DateFormatOpt = Annotated[str | None, typer.Option(
    "--date-format", help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M' "
    "(required for dates like 04/03/2024: day and month order is never guessed).")]
TimestampUnitOpt = Annotated[str | None, typer.Option(
    "--timestamp-unit", help="Unit of numeric (epoch) timestamps: s, ms or us.")]
MaxValueOpt = Annotated[float, typer.Option(
    "--max-value", help="Quarantine values (quantities, ratings) of larger magnitude.")]
MaxQuarantineOpt = Annotated[float, typer.Option(
    "--max-quarantine", help="Reject when a larger share of rows is quarantined.")]
MinUsersOpt = Annotated[int, typer.Option("--min-users", help="Reject with fewer clean users.")]
MinItemsOpt = Annotated[int, typer.Option("--min-items", help="Reject with fewer clean items.")]
HalfLifeOpt = Annotated[float | None, typer.Option(
    "--recency-half-life-days", help="An event's weight halves for every this many days "
    "before the latest event trained on (default: no decay).")]
RepeatsOpt = Annotated[str | None, typer.Option(
    "--repeats", help="A shopper's repeated events on one item: sum their weights, or "
    "keep the largest (max; with decay, about the latest). Default: sum.")]
DampingOpt = Annotated[str | None, typer.Option(
    "--quantity-damping", help="How quantities weigh: log (log2(1+q), the default), sqrt, "
    "none (q) or binary (1).")]


def _given_path(empty: str) -> Callable[[str | Path], Path]:
    """A path option's parser: an empty value (an unset shell variable) is refused.

    ``Path("")`` is the current folder: ``--output-dir "$OUT"`` with ``OUT`` unset wrote
    quarantine files and drafts wherever the command ran.
    """
    def parse(value: str | Path) -> Path:
        if isinstance(value, str) and not value.strip():
            raise typer.BadParameter(f"is empty; {empty}")
        return Path(value)

    return parse


_folder = _given_path("give a folder (. for the current one)")
_file = _given_path("give a file")


OutOpt = Annotated[Path, typer.Option(
    "--output-dir", parser=_folder,
    help="Where the quarantine files are written (validate: its Data Docs too).")]


#: Configuration fields whose command-line option is not ``--`` + the name with dashes.
_OPTION_OF_FIELD = {"method": "--split", "ks": "--k", "half_lives": "--weighting-half-lives",
                    "max_quarantine_fraction": "--max-quarantine", "requested_by": "--by",
                    "timestamp_format": "--date-format",
                    "demand_model_name": "SHOPREC_DEMAND_MODEL_NAME"}


def _weighting(half_life: float | None, repeats: str | None,
               damping: str | None) -> Any:
    """The event weighting the options ask for; ``None`` when none of them is given."""
    from shoprec.config import WeightingConfig

    given = {key: value for key, value in (("recency_half_life_days", half_life),
                                           ("repeats", repeats), ("quantity_damping", damping))
             if value is not None}
    return WeightingConfig(**given) if given else None


def _training_weighting(half_life: float | None, repeats: str | None, damping: str | None,
                        choose: bool | None, half_lives: str) -> Any:
    """The weighting of ``shoprec train``: chosen on validation unless one is given.

    ``choose`` (``--choose-weighting`` / ``--fixed-weighting``) decides when given; by
    default a weighting is chosen when none of the weighting options is given.
    """
    from shoprec.config import WeightingConfig, WeightingSearch

    given = _weighting(half_life, repeats, damping)
    weighting = given or WeightingConfig()
    try:
        days = [float(x) for x in half_lives.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--weighting-half-lives expects days separated by commas, e.g. "
                          f"7,30,120; got {half_lives!r}") from None
    search = WeightingSearch(half_lives=days)  # checked even when it is not used
    if not (choose if choose is not None else given is None):
        return weighting
    return weighting.model_copy(update={"search": search})


def _recorded_weighting(name: str, version: str) -> Any:
    """The weighting recorded in a version's recipe; the default when there is none."""
    from shoprec.registry.recipe import recorded_weighting

    return recorded_weighting(name, version)


def _explain(error: ValidationError) -> str:
    """A configuration error in the command line's terms: the option, the field, the rule.

    The options are checked by the configuration models (the same rules as the Prefect
    form); this only says which option a refused field came from.
    """
    problems = []
    for detail in error.errors():
        message = str(detail["msg"]).removeprefix("Value error, ")
        if detail["loc"]:
            field = str(detail["loc"][0])
            option = _OPTION_OF_FIELD.get(field, "--" + field.replace("_", "-"))
            message = f"{option} ({field}): {message}"
        problems.append(message)
    return "; ".join(problems)


def _handle_errors(func: F) -> F:
    """Turn shoprec's errors into messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if stopped_by_signal(exc):
                    # A fault while unwinding from Ctrl-C or SIGTERM (a registry call cut
                    # short): the command was stopped, as asked.
                    raise KeyboardInterrupt from exc
                raise
        except BrokenPipeError:
            _closed_pipe()
        except DataValidationError as exc:
            if exc.report is not None:
                _print_report(exc.report)
            err_console.print(_styled(("rejected:", "bold red"), f" {exc}"), highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
        except (InputNotFoundError, ConfigError) as exc:
            err_console.print(_styled(("error:", "bold red"), f" {exc}"), highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except ValidationError as exc:
            err_console.print(_styled(("error:", "bold red"),
                                      f" invalid option: {_explain(exc)}"), highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except DataError as exc:
            err_console.print(_styled(("rejected:", "bold red"), f" {exc}"), highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
        except ShopRecError as exc:
            from shoprec.registry.aliases import ChampionBusyError
            from shoprec.registry.promotion import PromotionError, PromotionRefused

            if isinstance(exc, ChampionBusyError):  # nobody's mistake, and no fault
                err_console.print(_styled(("refused:", "bold red"), f" {exc}"), highlight=False)
                raise typer.Exit(EXIT_REFUSED) from None
            if isinstance(exc, PromotionRefused):
                _print_decision(exc.decision.to_dict())
                err_console.print(_styled(("refused:", "bold red"), f" {exc}"), highlight=False)
                raise typer.Exit(EXIT_REFUSED) from None
            if isinstance(exc, PromotionError):
                err_console.print(_styled(("error:", "bold red"), f" {exc}"), highlight=False)
                raise typer.Exit(EXIT_USAGE) from None
            if isinstance(exc, RegistryError):  # a fault, not a mistake: no traceback
                # A locked store said as such; any other without the SQL that follows.
                said = _service_fault(exc) or str(exc).split("\n[SQL:")[0].strip()
                err_console.print(_styled(("registry error:", "bold red"), f" {said}"),
                                  highlight=False)
                raise typer.Exit(EXIT_FAILURE) from None
            # Any other: a model that cannot be read or trained (a damaged bundle, a
            # candidate that failed); the message says what (the traceback with -v).
            if logging.getLogger().isEnabledFor(logging.INFO):
                traceback.print_exc()
            err_console.print(_styled(("error:", "bold red"), f" {exc}"), highlight=False)
            raise typer.Exit(EXIT_FAILURE) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _name_check(check: Callable[[str], str]) -> Callable[[str], str]:
    """A ``--registered-model-name`` callback: ``check``'s refusal as a usage error."""
    def checked(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return checked


#: The name as MLflow accepts one, before any work is done.
_checked_name = _name_check(registry_name)
#: The name of a command that registers versions under it (no quotes).
_checked_new_name = _name_check(new_registry_name)


def _parse_map(values: list[str] | None) -> dict[str, str]:
    """``user_id=customer,item_id=sku`` -> ``{"user_id": "customer", "item_id": "sku"}``.

    A comma starts a new pair only where a canonical name and ``=`` follow it, so a column
    whose name holds a comma ("Menge, Stk.") is read whole.
    """
    mapping: dict[str, str] = {}
    for value in values or []:
        for pair in re.split(r",(?=\s*(?:items\.)?[A-Za-z_]+\s*=)", value):
            if not pair.strip():
                continue
            if "=" not in pair:
                raise ConfigError(f"--map expects canonical=column pairs, got {pair!r}")
            key, column = (s.strip() for s in pair.split("=", 1))
            mapping[key] = column
    return mapping


def _parse_params(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``mf.factors=32`` -> ``{"mf": {"factors": 32}}``; values are JSON where they parse.

    Each value is checked against its family's declared type and range here, before any
    data is read, and refused with the allowed range.
    """
    from shoprec.config import DEFAULT_MODELS, CandidateParams, allowed_range

    params: dict[str, dict[str, Any]] = {}
    given: dict[tuple[str, str], str] = {}
    for value in values or []:
        key, sep, raw = value.partition("=")
        model, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--param expects MODEL.NAME=VALUE, got {value!r}")
        if model not in DEFAULT_MODELS:
            raise ConfigError(f"--param names unknown model {model!r}; choose from "
                              f"{', '.join(DEFAULT_MODELS)}")
        try:
            parsed: Any = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        params.setdefault(model, {})[name.strip()] = parsed
        given[model, name.strip()] = raw
    for model, values_of in params.items():
        schema = CandidateParams.schema_of(model)
        try:
            schema(**values_of)
        except ValidationError as exc:
            problems, seen = [], set()
            for error in exc.errors():
                field = str(error["loc"][0])
                if field in seen:  # one message per field is enough
                    continue
                seen.add(field)
                if error["type"] == "extra_forbidden":
                    problems.append(f"{model} has no hyperparameter {field!r}; its "
                                    f"hyperparameters are {', '.join(schema.model_fields)}")
                else:
                    problems.append(f"--param {model}.{field}={given[model, field]}: "
                                    f"{error['msg']}; allowed: {allowed_range(schema, field)}")
            raise ConfigError("; ".join(problems)) from None
    return params


def _data_config(interactions: str | None, items: str | None, fmt: str | None,
                 mapping: list[str] | None, delimiter: str | None, encoding: str,
                 date_format: str | None = None, timestamp_unit: str | None = None,
                 items_reading: tuple[str | None, str | None] = (None, None),
                 decimal: str | None = None, default_event: str | None = None) -> DataConfig:
    from shoprec.config import DataConfig
    from shoprec.data.io import check_readable

    for given, option in ((interactions, "--interactions"), (items, "--items")):
        if given is not None and not given.strip():
            # An unset shell variable ("$DATA"): the bundled sample would be trained on and
            # published in its place.
            raise ConfigError(f"{option} is empty; give a file (leave {option} out for "
                              + ("the bundled sample)" if option == "--interactions" else
                                 "no items file)"))
    config = DataConfig(interactions=interactions, items=items, format=fmt,
                        columns=_parse_map(mapping), delimiter=delimiter, encoding=encoding,
                        timestamp_format=date_format, timestamp_unit=timestamp_unit,
                        items_delimiter=items_reading[0], items_encoding=items_reading[1],
                        decimal=decimal,
                        **({"default_event": default_event} if default_event else {}))
    # Before any output folder is made or server started: a mistyped path leaves nothing.
    for path, what in ((interactions, "interactions"), (items, "items")):
        if path:
            check_readable(path, what)
    return config


def _alias_given(value: str) -> str:
    """An empty ``--alias`` (an unset variable) is refused, not read as the champion."""
    if not value.strip():
        raise typer.BadParameter("is empty; give an alias such as champion or challenger")
    return value.strip()


def _refuse_other_kind_now(name: str, kind: str) -> None:
    """Refuse a registered model that holds the other kind before the run's work.

    The run checks again when it registers; a store that does not exist yet holds
    nothing, and is not created here.
    """
    from shoprec.registry import tracking

    path = tracking.sqlite_path(tracking.tracking_uri())
    if path is not None and not path.exists():
        return
    from shoprec.registry.demand import refuse_other_kind

    refuse_other_kind(name, kind)


def _cutoffs(text: str) -> list[int]:
    """The cut-offs of ``--k`` (``10`` or ``5,10,20``); their range is the configuration's."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k expects integers separated by commas, got {text!r}") from None


def _writable_dir(path: Path, option: str) -> None:
    """Refuse an output folder that is a file or cannot be written, before any work."""
    from shoprec.data.io import check_writable_folder

    check_writable_folder(path, option)


def _writable_file(path: Path | None, option: str) -> None:
    """Refuse an output file that is a folder or cannot be written, before any work."""
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    _writable_dir(path.parent, f"the folder of {option}")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be written ({exc.strerror or exc}); choose "
                          "another file") from None
    if not existed:
        path.unlink()


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary`` as strict JSON (a figure that is not a number, NaN, as ``null``).

    Written beside its place and renamed: a reader never sees half a file, nor a kill
    leaves one.
    """
    from shoprec.files import replace_whole

    text = json.dumps(_finite(summary), indent=2, default=str, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path, lambda draft: draft.write_text(text))


def _running(path: Path | None, command: str) -> None:
    """Say in the summary file that a run has begun.

    Killed outright (``kill -9``), the run leaves "running", never the last success's "ok".
    """
    if path is not None:
        _write_summary(path, {"status": "running", "command": command, "pid": os.getpid(),
                              "started_at": datetime.now(UTC).isoformat(timespec="seconds")})


def _records_failure(command: str) -> Callable[[F], F]:
    """Run a command under :func:`_summary_of_failure` for its ``summary_json`` option.

    Around the whole command, its option checks included: a missing nightly export is the
    likeliest failure of a scheduled run, and must not leave yesterday's "ok".
    """
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _summary_of_failure(kwargs.get("summary_json"), command):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _summary_option(args: list[str]) -> Path | None:
    """The ``--summary-json`` value of a command line, read as typed (the last one wins)."""
    found = None
    for at, arg in enumerate(args):
        if arg == "--summary-json" and at + 1 < len(args):
            found = args[at + 1]
        elif arg.startswith("--summary-json="):
            found = arg.partition("=")[2]
    return Path(found) if found else None


class _SummaryCommand(TyperCommand):
    """A command with ``--summary-json`` whose refused command line replaces the summary.

    Click (typer's copy) refuses an option (an unknown option, a value of the wrong type, a
    missing value) before the command runs, so :func:`_records_failure` never sees it; a
    nightly job's typo must not leave yesterday's "ok" either.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        typed = list(args)  # click's parser consumes the list it is given
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:  # typer's own click: UsageError and its kinds
            _record_failure(_summary_option(typed), self.name or "shoprec", exc)
            raise


def _finite(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # a numpy scalar (float32 too) as its Python number
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@contextlib.contextmanager
def _summary_of_failure(path: Path | None, command: str) -> Iterator[None]:
    """On failure, replace the summary at ``path`` with one that says so.

    The file is what a monitor reads after a scheduled run: left in place, the last
    successful run's summary would read as this one's.
    """
    try:
        yield
    except BaseException as exc:
        _record_failure(path, command, exc)
        raise


def _record_failure(path: Path | None, command: str, exc: BaseException) -> None:
    """Replace the summary at ``path`` with the record of how ``exc`` ended the command."""
    # A path that is a folder is the mistake being reported (--summary-json .): no file.
    if path is None or path.name in ("", ".", "..") or path.is_dir() \
            or (isinstance(exc, typer.Exit) and exc.exit_code == 0):
        return
    # As the exit codes read them: rejected data (1) apart from every other end.
    status = ("stopped" if stopped_by_signal(exc)
              else "failed" if isinstance(exc, InputNotFoundError)
              else "rejected" if isinstance(exc, (DataValidationError, DataError))
              else "failed")
    # Click's errors (typer's copy of click) keep their message apart from str().
    message = exc.format_message() if isinstance(exc, typer.TyperException) else str(exc)
    record = {"status": status, "command": command,
              "error": " ".join(f"{type(exc).__name__}: {message}".split())[:2000],
              **_started(path), "ended_at": datetime.now(UTC).isoformat(timespec="seconds"),
              # The runs it opened, when it got that far: where the person on call looks.
              **_runs_of(exc)}
    try:
        _write_summary(path, record)
    except (OSError, ValueError) as error:  # the failure is what the user must see
        logging.getLogger(__name__).warning("could not write %s: %s", path, error)
        # A full disk would otherwise leave the last run's "ok" (removing needs no room).
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
            logging.getLogger(__name__).warning("removed %s: it described an earlier run",
                                                path)


def _version_age(model_name: str, version: str) -> str:
    """`` (data up to D, registered D)`` for a version (``""``: the registry says nothing).

    A morning batch after a failed night printed the line of any other day: the model's
    age, the one sign the nightly had not published, was not said.
    """
    from mlflow.exceptions import MlflowException

    from shoprec.registry import tracking

    try:
        found = tracking.client().get_model_version(model_name, str(version))
    except (MlflowException, OSError):
        return ""
    registered = datetime.fromtimestamp((found.creation_timestamp or 0) / 1000, UTC)
    cutoff = (found.tags or {}).get("data_cutoff") or ""
    return (f" (data up to {cutoff[:10]}, " if cutoff else " (") + \
        f"registered {registered:%Y-%m-%d %H:%M} UTC)"


def _runs_of(exc: BaseException) -> dict[str, str]:
    """The run ids the flow put on ``exc``, or on an exception it was raised over.

    A SIGTERM reaches the flow as Prefect's ``TerminationSignal``, which carries them; Prefect
    then sends the signal again, and the ``KeyboardInterrupt`` that ends the command is
    raised while that one is handled: the summary of a stopped night lost its run ids.
    """
    for cause in _causes(exc):
        runs = getattr(cause, "shoprec_runs", None)
        if runs:
            return dict(runs)
    return {}


def _finished(path: Path, command: str, summary: dict[str, Any]) -> dict[str, Any]:
    """An ended command's summary with its status, command, pid, start, end and seconds.

    The "running" and failure records carried them and a success did not: "did tonight's
    run finish, and how long did it take" read the file's time instead.
    """
    ended = datetime.now(UTC)
    started = _started(path)
    seconds = None
    if "started_at" in started:
        with contextlib.suppress(ValueError):
            seconds = round((ended - datetime.fromisoformat(started["started_at"]))
                            .total_seconds(), 1)
    return {"status": "ok", "command": command, **started,
            "ended_at": ended.isoformat(timespec="seconds"),
            **({"seconds": seconds} if seconds is not None else {}), **summary}


def _started(path: Path) -> dict[str, Any]:
    """The pid and start time this command wrote as "running", kept in its failure."""
    try:
        running = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(running, dict) or running.get("status") != "running" \
            or running.get("pid") != os.getpid():
        return {}
    return {k: running[k] for k in ("pid", "started_at") if k in running}


def _counts_table(title: str, counts: dict[str, Any]) -> Table:
    """Rows in, clean, quarantined by reason, and the sum check, from report or summary."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_row("rows in", f"{counts['rows_in']:,}")
    table.add_row("clean", f"{counts['rows_clean']:,}")
    table.add_row("quarantined", f"{counts['rows_quarantined']:,}")
    for reason, count in sorted(counts["quarantined_by_reason"].items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{count:,}")
    total = counts["rows_clean"] + counts["rows_quarantined"]
    table.add_row("clean + quarantined", f"{total:,}"
                  + (" (= rows in)" if total == counts["rows_in"] else " (MISMATCH)"))
    table.add_row("users / items", f"{counts['users']:,} / {counts['items']:,}")
    return table


def _print_report(report: Any) -> None:
    """Print the counts by reason and the expectations that did not hold."""
    cleaning = report.cleaning
    if cleaning is not None:
        table = _counts_table(f"Data report: {report.source} ({report.format})",
                              cleaning.to_dict())
        table.add_row("catalogue items", f"{cleaning.items_clean:,}"
                      + (" (derived)" if cleaning.items_derived else ""))
        if cleaning.items_quarantined:
            reasons = ", ".join(f"{k}={v}" for k, v in cleaning.items_quarantined_by_reason.items())
            table.add_row("items quarantined", f"{cleaning.items_quarantined:,} ({reasons})")
        if cleaning.first_timestamp:
            table.add_row("period", f"{cleaning.first_timestamp[:10]} .. "
                          f"{cleaning.last_timestamp[:10]}")
        console.print(table)
    passed = sum(o.passed for o in report.outcomes)
    console.print(f"expectations: {passed} of {len(report.outcomes)} passed, "
                  f"{len(report.failures)} failed, {len(report.warnings)} warning(s)")
    for outcome in report.warnings:
        console.print(_styled("  ", ("warning", "yellow"), f" {outcome.describe()}"),
                      highlight=False)
    for outcome in report.failures:
        console.print(_styled("  ", ("failed", "red"), f" {outcome.describe()}"),
                      highlight=False)
    if report.data_docs:
        console.print(f"Data Docs: {report.data_docs}")


def _print_bias(leaderboard: list[dict[str, Any]], k: str = "10") -> None:
    """Beyond accuracy, on test at ``k``: what each candidate exposes, and for whom it works."""
    from shoprec.evaluation.metrics import ACTIVITY_GROUPS, BIAS_METRICS

    shown = [f"{m}@{k}" for m in BIAS_METRICS] + [f"ndcg_{g}@{k}" for g in ACTIVITY_GROUPS]
    rows = [e for e in leaderboard if f"novelty@{k}" in e["test"]]
    if not rows:
        return
    table = Table(title="Beyond accuracy (test): novelty, popularity, exposure Gini, "
                        "long-tail share; ndcg of light, medium and heavy shoppers")
    table.add_column("model", no_wrap=True)
    for metric in shown:
        table.add_column(metric, justify="right")
    for entry in rows:
        table.add_row(entry["model"], *[_fmt(entry["test"].get(m)) for m in shown])
    console.print(table)


def _print_weighting(weighting: dict[str, Any]) -> None:
    """Say which event weighting the run used and, when it was chosen, how each scored."""
    choice = weighting.get("choice")
    if choice and choice["candidates"]:
        scores = "; ".join(f"{c['weighting']} {c['validation_ndcg@10']:.4f}"
                           for c in choice["candidates"])
        console.print(_styled("event weighting: ", (weighting["description"], "bold"),
                              f", chosen on validation ({choice['users']:,} users, "
                              f"{choice['seconds']:.1f} s; quick mf ndcg@10: {scores})"),
                      highlight=False)
    elif weighting.get("description"):
        console.print(f"event weighting: {weighting['description']}"
                      + (" (kept: no validation rows to choose by, or nothing else to try)"
                         if choice else ""), highlight=False)


def _print_summary(summary: dict[str, Any]) -> None:
    """Print the data counts, the split, the leaderboard and the gate of a pipeline run."""
    counts = summary["data"]
    table = _counts_table(f"Data report: {counts['source']} ({counts['format']})", counts)
    if counts.get("catalogue_items") is not None:
        table.add_row("catalogue items", f"{counts['catalogue_items']:,}")
    if counts.get("items_quarantined"):
        reasons = ", ".join(f"{k}={v}" for k, v in counts["items_quarantined_by_reason"].items())
        table.add_row("items quarantined", f"{counts['items_quarantined']:,} ({reasons})")
    if counts.get("first_timestamp"):
        table.add_row("period (UTC)", f"{counts['first_timestamp'][:16].replace('T', ' ')} .. "
                      f"{counts['last_timestamp'][:16].replace('T', ' ')}")
    console.print(table)
    # The rows left out as erased are the list's: a run where it is not (another folder,
    # the variable unset, a restored machine) trained on erased shoppers without a word.
    console.print(_erasure_list_line(), highlight=False, soft_wrap=True)
    split = Table(title=f"Split: {summary['split']['method']}")
    # A temporal split says where each part starts: a mistyped year shows there.
    cutoffs = summary["split"].get("cutoffs") or {}
    starts = {"validation": cutoffs.get("validation_start"), "test": cutoffs.get("test_start")}
    columns = ["part", "rows", "users", "evaluated users", "relevant pairs"]
    for column in columns + (["after (UTC)"] if cutoffs else []):
        split.add_column(column, justify="right" if column != "part" else "left")
    for part in ("train", "validation", "test"):
        info = summary["split"][part]
        start = starts.get(part)
        split.add_row(part, f"{info['rows']:,}", f"{info['users']:,}",
                      f"{info['evaluated_users']:,}" if "evaluated_users" in info else "-",
                      f"{info['relevant_pairs']:,}" if "relevant_pairs" in info else "-",
                      *([start[:16].replace("T", " ") if start else "-"] if cutoffs else []))
    console.print(split)
    matrix = summary["matrix"]
    console.print(f"training matrix: {matrix['users']:,} users x {matrix['items']:,} items, "
                  f"{matrix['nnz']:,} non-zeros")
    _print_weighting(summary.get("weighting") or {})
    primary = summary["primary_metric"]
    # The other columns at the primary metric's K: --k need not include 10.
    k = primary.partition("@")[2]
    board = Table(title=f"Leaderboard (selected by validation {primary})")
    shown = [primary] + [m for m in (f"recall@{k}", f"hit_rate@{k}", f"coverage@{k}")
                         if m != primary]
    if any("rmse" in e["test"] for e in summary["leaderboard"]):
        shown.append("rmse")
    for column in ("model", "family", "status", f"val {primary}",
                   *[f"test {m}" for m in shown], "train s", "refit s"):
        board.add_column(column, justify="left" if column in ("model", "family", "status")
                         else "right", no_wrap=column == "model")
    for entry in summary["leaderboard"]:
        board.add_row(entry["model"], entry["family"], entry["status"],
                      _fmt(entry["validation"].get(primary)),
                      *[_fmt(entry["test"].get(m)) for m in shown],
                      f"{entry['train_seconds']:.1f}", f"{entry.get('refit_seconds', 0.0):.1f}")
    console.print(board)
    # The candidates' own (the champion's recipe repeats one of them): said as a range, the
    # upper median of every row read as "the winner's".
    errors = sorted(e["test"][f"ndcg_se@{k}"] for e in summary["leaderboard"]
                    if e["test"].get(f"ndcg_se@{k}") is not None
                    and e["model"] != "champion-recipe")
    if errors and primary.startswith("ndcg@"):
        # How far apart two rows must be to mean anything, said beside the table.
        users = (summary.get("split") or {}).get("test", {}).get("evaluated_users")
        if users is not None and users < 2:
            # One user's figure has no spread: 0.0000 read as "exact".
            console.print(f"each row's test {primary} rests on {users} test user: its "
                          "standard error cannot be estimated, and these figures cannot "
                          "tell the models apart", highlight=False, soft_wrap=True)
        else:
            spread = (f"of about {errors[0]:.4f}" if f"{errors[0]:.4f}" == f"{errors[-1]:.4f}"
                      else f"between {errors[0]:.4f} and {errors[-1]:.4f}")
            console.print(f"each row's test {primary} has a standard error {spread} (the "
                          "spread over its " + (f"{users:,} " if users else "")
                          + "test users)", highlight=False, soft_wrap=True)
        gate = summary.get("gate") or {}
        # The gate's own floor: under --gate-min-users when the champion was itself
        # judged on fewer (then "replaces a champion on 50" was false two lines above).
        floor = next((c.get("reference") for c in gate.get("checks", [])
                      if c.get("name") == "enough_test_users"), None) \
            or gate.get("min_users") or 0
        floor = int(floor)
        if users is not None and 2 <= users < floor:
            console.print(f"note: {users} test users are few: one shopper's list moves these "
                          "figures by more than the families differ (the gate replaces a "
                          f"champion on {floor} or more)", highlight=False, soft_wrap=True)
    _print_bias(summary["leaderboard"], k)
    _print_tuning(summary.get("tuning") or {}, primary)
    for entry in summary["leaderboard"]:
        if entry.get("error"):
            console.print(f"  {entry['model']} {entry['status']}: {entry['error']}",
                          highlight=False)
    registered = summary["registered"]
    gate = summary["gate"]
    console.print(_styled("winner: ", (summary["winner"], "bold"),
                          f"; registered {registered['name']} version "
                          f"{registered['version']} with aliases "
                          f"{', '.join(registered['aliases'])}; gate "
                          f"{'passed' if gate['passed'] else 'not passed'}"), highlight=False)
    if registered.get("previous_champion"):
        console.print(f"  version {registered['previous_champion']}, champion until now, is "
                      "previous-champion (`shoprec rollback` returns to it)", highlight=False)
    before = registered.get("previous_challenger")
    if before:
        # An A/B arm serving the challenger keeps the version it loaded; a plain `promote`
        # would now take this one, which never served.
        named = ("" if registered["name"] == DEFAULT_MODEL_NAME
                 else f" --registered-model-name {registered['name']}")
        console.print(f"  challenger moved from version {before} to {registered['version']}"
                      f" (to promote version {before}: `shoprec promote --version {before}"
                      f"{named}` with the data options)", highlight=False, soft_wrap=True)
    for check in gate["checks"]:
        # One line each, however long: a log is read with grep.
        console.print(f"  {check['name']}: {'pass' if check['passed'] else 'fail'} "
                      f"({check['reason']})", highlight=False, soft_wrap=True)
    console.print(f"MLflow run {summary['mlflow_run_id']}, Prefect flow run "
                  f"{summary['prefect_flow_run_id']}")


def _print_tuning(tuning: dict[str, Any], primary: str) -> None:
    """One line per searched family: trials, the best figure against the configured one."""
    for name, search in tuning.items():
        if search.get("skipped"):
            console.print(f"search {name}: skipped ({search['skipped']})", highlight=False)
            continue
        best = search.get("best_value")
        configured = search.get("configured_value")
        fitted = search.get("best_fitted") or {}
        # A value left open is said as the fit chose it ("None" read as a value to copy).
        chosen = ", ".join(f"{k}={_short(v)}" if v is not None or fitted.get(k) is None
                           else f"{k}={_short(fitted[k])} (chosen on its grid)"
                           for k, v in (search.get("best_params") or {}).items())
        console.print(
            f"search {name}: {search.get('complete', 0)} of {search.get('trials', 0)} trials "
            f"complete ({search.get('pruned', 0)} pruned, {search.get('failed', 0)} failed) in "
            f"{search.get('seconds', 0.0):.1f} s; validation {primary} {_fmt(best)} "
            f"against {_fmt(configured)} as configured"
            + (f"; chosen {chosen}" if chosen else ""), highlight=False)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _printable(text: str) -> str:
    """``text`` with control characters (a tab, a line break) written as escapes.

    A table cell holding a tab or a line break printed one row on two lines.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def _print_answer_json(response: Any, reasons: list[Any], *, model_name: str, alias: str,
                       version: str) -> None:
    """One recommendation answer as a JSON object on standard output, ids exactly as held."""
    items = []
    for rank, (item, title, score, why) in enumerate(zip(
            response["item_ids"], response["titles"], response["scores"], reasons,
            strict=True), 1):
        entry: dict[str, Any] = {"rank": rank, "item_id": item, "title": title,
                                 "score": float(score)}
        if why is not None:
            entry["because"] = [{"item_id": r["item_id"], "title": r["title"],
                                 "share": float(r["share"])} for r in why]
        items.append(entry)
    answer = {"registered_model": model_name, "alias": alias, "version": str(version),
              "source": response["source"], "items": items}
    text = json.dumps(_finite(answer), ensure_ascii=False, allow_nan=False)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _closed_pipe()


def _percent(share: float) -> str:
    """A share as a whole percent; one under half a percent as ``<1%``, never ``0%``."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


_VERBOSE = False
#: How many -v were given (-vv: shoprec's debug records).
_VERBOSITY = 0


class _WithoutTraceback(logging.Formatter):
    """Formats a record like ``inner`` does, leaving out its traceback (shown with -v).

    The record itself is restored afterwards: other handlers (Prefect's API handler, which
    feeds the UI) still get the full traceback.
    """

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _quiet_tracebacks() -> None:
    """Keep tracebacks off the console unless -v is given.

    Prefect's task and flow runs log every exception with a traceback; without -v the
    console handlers keep the one-line messages only.
    """
    if _VERBOSE:
        return
    loggers = [logging.getLogger(), *(logging.getLogger(name)
                                      for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) \
                    and not isinstance(handler, logging.FileHandler) \
                    and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))
                # Prefect's progress records ("Finished in state Completed()", thirty a
                # run, none naming its task) are -v's; its warnings and errors stay. The
                # runs' logs in the Prefect UI keep them all (another handler).
                handler.addFilter(_prefect_progress_hidden)


def _prefect_progress_hidden(record: logging.LogRecord) -> bool:
    """A console filter: Prefect's records below WARNING are left out (shown with -v).

    Its retries stay: "Retry 1/2 will start" is said at INFO, and is news.
    """
    return record.levelno >= logging.WARNING or not (
        record.name == "prefect" or record.name.startswith("prefect.")) \
        or "retry" in record.getMessage().lower()


def _before_flows(*modules: str) -> None:
    """What every command that runs a flow needs first.

    Quiet tracebacks, and a temporary Prefect server (when no PREFECT_API_URL is set) that
    starts while ``modules`` (the command's flow, what it runs) are imported, and stops by
    itself if this process is killed outright.
    """
    from shoprec_flows.server_guard import start_while_importing

    _check_prefect_home()
    _quiet_tracebacks()
    start_while_importing(list(modules))


def _check_prefect_home() -> None:
    """Refuse a Prefect home folder that cannot be made, before any server starts.

    Under cron with an unwritable HOME, the temporary server died after 36 s with 632
    lines of traceback, and the run ended as a fault (exit 3).

    Raises:
        ConfigError: The folder cannot be created or written.
    """
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        writable = os.access(home, os.W_OK | os.X_OK)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        if writable:
            if "MPLCONFIGDIR" not in os.environ and not os.access(Path.home(), os.W_OK):
                # Else matplotlib makes a /tmp/matplotlib-* folder each run, removed at
                # exit by a hook the CLI's fast exit skips: one more per night under cron.
                os.environ["MPLCONFIGDIR"] = str(home / "matplotlib")
            return
        reason = "not writable by this account"
    raise ConfigError(f"Prefect's home folder {home} cannot be used ({reason}): Prefect "
                      "keeps its database and settings there; set PREFECT_HOME to a "
                      "writable folder (it defaults to ~/.prefect, so a service's HOME "
                      "must be writable, or PREFECT_HOME set)")


def _configure_logging(verbose: int) -> None:
    global _VERBOSE, _VERBOSITY
    _VERBOSE, _VERBOSITY = verbose > 0, verbose
    # -vv: shoprec's own debug records too (the other libraries' stay at INFO: Prefect's,
    # MLflow's and TensorFlow's debug output would bury them).
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # MLflow's progress records, in a format of its own, are -v's too
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if verbose > 1:
        for name in ("shoprec", "shoprec_flows", "shoprec_tasks", "shoprec_cli", "cli"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    _quiet_tracebacks()


@app.callback()
def _root(verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True,
        help="Log progress (-vv: and shoprec's debug records; `serve -v`: every request).")]
          = 0) -> None:
    _configure_logging(verbose)


#: Options naming one input file: given twice, Click kept the last and dropped the first.
_ONE_FILE_OPTIONS = ("--interactions", "--items")


def _repeated_file_option(args: list[str]) -> str | None:
    """Why ``args`` cannot be run: ``--interactions`` (or ``--items``) given more than once.

    A daily-files reader gave one file per day: the command read the last alone, said
    "valid" for its one day, and trained on it. (Click keeps the last value of an option
    and tells its callbacks nothing of the others, so the command line itself is read.)
    """
    command = next((a for a in args if not a.startswith("-")), None)
    if command == "generate":  # its --items and --interactions are counts
        return None
    for option in _ONE_FILE_OPTIONS:
        given = [a for a in args if a == option or a.startswith(option + "=")]
        if len(given) > 1:
            return (
                f"{option} is given {len(given)} times; shoprec reads one file: join the "
                "files first, by column name, ids as text (python -c \"import glob, pandas "
                "as pd; pd.concat(pd.read_csv(f, dtype=str) for f in sorted(glob.glob("
                "'daily/*.csv'))).to_csv('all.csv', index=False)\"), and pass that file")
    return None


@app.command()
@_handle_errors
def generate(
    users: Annotated[int, typer.Option("--users", help="Number of users.")],
    items: Annotated[int, typer.Option("--items", help="Number of items.")],
    interactions: Annotated[int, typer.Option("--interactions", help="Interaction rows.")],
    out: Annotated[Path, typer.Option(
        "--out", parser=_folder, help="Folder to write the Parquet files to.")],
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                      help="Random seed.")] = 0,
    days: Annotated[int, typer.Option("--days", min=1, max=36_500,
                                      help="Length of the period.")] = 180,
    movielens: Annotated[bool, typer.Option(
        "--movielens", help="Also write ratings.csv and movies.csv in MovieLens' layout "
        "(one rating per shopper and item).")] = False,
) -> None:
    """Write synthetic interactions.parquet and items.parquet with planted taste segments."""
    from shoprec.data.synthetic import check_sizes, write_movielens
    from shoprec.data.synthetic import generate as run_generate

    check_sizes(users, items, interactions, days)
    _writable_dir(out, "--out")
    summary = run_generate(out, users=users, items=items, interactions=interactions,
                           seed=seed, days=days)
    console.print(f"wrote {summary.interactions:,} interactions of {summary.users:,} users "
                  f"over {summary.items:,} items ({summary.segments} taste segments, "
                  f"{summary.categories} categories) in {summary.seconds:.1f} s")
    console.print(f"  {summary.interactions_path}\n  {summary.items_path}")
    if movielens:
        ratings, movies = write_movielens(summary, out)
        # One rating per shopper and product: fewer rows than the interactions.
        import pandas as pd

        count = len(pd.read_csv(ratings, usecols=[0]))
        console.print(f"  {ratings} ({count:,} ratings, one per shopper and product)\n  "
                      f"{movies}")


@app.command()
@_handle_errors
def validate(
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    items_delimiter: ItemsDelimiterOpt = None,
    items_encoding: ItemsEncodingOpt = None,
    decimal: DecimalOpt = None,
    default_event: DefaultEventOpt = None,
    date_format: DateFormatOpt = None,
    timestamp_unit: TimestampUnitOpt = None,
    max_value: MaxValueOpt = 1e6,
    max_quarantine: MaxQuarantineOpt = 0.5,
    min_users: MinUsersOpt = 10,
    min_items: MinItemsOpt = 10,
    output_dir: OutOpt = Path("runs/validate"),
    data_docs: Annotated[bool, typer.Option(
        "--data-docs/--no-data-docs", help="Render GX Data Docs into the output folder.")] = False,
    report_json: Annotated[Path | None, typer.Option(
        "--report-json", parser=_file, help="Write the full report as JSON.")] = None,
    pseudonymize: Annotated[bool, typer.Option(
        "--pseudonymize", help="Replace user ids at ingestion with keyed pseudonyms (key: "
        "SHOPREC_PSEUDONYM_KEY), as train does, so no raw id reaches the quarantine "
        "file or the report.")] = False,
) -> None:
    """Validate and clean a data set; print the report (exit 0 valid, 1 rejected, 2 usage)."""
    from shoprec.config import CleaningConfig
    from shoprec.pipeline import PreparationSteps, load_and_validate

    data_config = _pseudonymized(_data_config(
        interactions, items, fmt, mapping, delimiter, encoding, date_format, timestamp_unit,
        items_reading=(items_delimiter, items_encoding), decimal=decimal,
        default_event=default_event), pseudonymize, None)
    cleaning_config = CleaningConfig(max_quarantine_fraction=max_quarantine,
                                     min_users=min_users, min_items=min_items,
                                     max_value=max_value)
    _writable_file(report_json, "--report-json")
    _writable_dir(output_dir, "--output-dir")
    began = time.perf_counter()
    fingerprint: str | None = None

    def write_report(report: Any) -> None:
        if report_json and report is not None:
            from shoprec.files import replace_whole

            text = json.dumps({**report.to_dict(), "data_fingerprint": fingerprint},
                              indent=2, default=str)
            report_json.parent.mkdir(parents=True, exist_ok=True)
            # Beside its place and renamed: a full disk never leaves half a report.
            replace_whole(report_json, lambda draft: draft.write_text(text))

    from shoprec.files import folder_in_use

    try:
        steps = PreparationSteps(output_dir / "data_docs" if data_docs else None)
        with folder_in_use(output_dir, "--output-dir"):
            from shoprec.pipeline import data_fingerprint

            # What a version's data_fingerprint tag is compared with: an auditor could
            # not compute it (it is no plain checksum of the file).
            fingerprint = data_fingerprint(data_config)
            prepared = load_and_validate(data_config, cleaning_config, output_dir, steps)
    except DataValidationError as exc:
        write_report(exc.report)
        raise
    write_report(prepared.report)
    _print_report(prepared.report)
    console.print(f"quarantine written to {prepared.quarantine_paths['interactions']}")
    console.print(f"data fingerprint {fingerprint} (a version's data_fingerprint tag)",
                  highlight=False, soft_wrap=True)
    console.print(_styled(("valid", "green"), f" in {time.perf_counter() - began:.1f} s"))


PseudonymizeOpt = Annotated[bool, typer.Option(
    "--pseudonymize", help="Replace user ids at ingestion with keyed pseudonyms (key: "
    "SHOPREC_PSEUDONYM_KEY, or --pseudonym-secret).")]
PseudonymSecretOpt = Annotated[str | None, typer.Option(
    "--pseudonym-secret", help="Prefect Secret block holding the pseudonymisation key "
    "(implies --pseudonymize).")]


def _pseudonymized(config: DataConfig, pseudonymize: bool,
                   secret: str | None) -> DataConfig:
    """``config`` with the pseudonymisation options; a missing key is refused now."""
    if secret:
        from shoprec.config import check_block_name

        check_block_name(secret)  # before any flow run records it among its parameters
    config = config.model_copy(update={"pseudonymize": pseudonymize or bool(secret),
                                       "pseudonym_secret": secret})
    if config.pseudonymize and not secret:
        from shoprec.privacy import KEY_ENV, make_key

        make_key(os.environ.get(KEY_ENV), KEY_ENV)  # no key: a usage error, before any work
    return config


@app.command(cls=_SummaryCommand)
@_handle_errors
@_records_failure("train")
def train(
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    items_delimiter: ItemsDelimiterOpt = None,
    items_encoding: ItemsEncodingOpt = None,
    decimal: DecimalOpt = None,
    default_event: DefaultEventOpt = None,
    date_format: DateFormatOpt = None,
    timestamp_unit: TimestampUnitOpt = None,
    max_value: MaxValueOpt = 1e6,
    split: Annotated[str, typer.Option("--split", help="temporal, random or leave-last.")]
    = "temporal",
    test_days: Annotated[float, typer.Option("--test-days")] = 30.0,
    validation_days: Annotated[float, typer.Option("--validation-days")] = 30.0,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.2,
    validation_fraction: Annotated[float, typer.Option("--validation-fraction")] = 0.1,
    test_n: Annotated[int, typer.Option("--test-n")] = 1,
    validation_n: Annotated[int, typer.Option("--validation-n")] = 1,
    repeat_items: Annotated[bool, typer.Option(
        "--repeat-items", help="A shop of repeat purchases (groceries): items a shopper "
        "already bought count as relevant when bought again, the 'again' candidate (own "
        "purchases first) trains, and the published version's lists keep them.")] = False,
    evaluation_users: Annotated[int, typer.Option(
        "--evaluation-users", help="Score validation and test on a seeded sample of at most "
        "this many users (0: every user).")] = 50_000,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 10 or 5,10,20.")] = "10",
    primary_metric: Annotated[str, typer.Option(
        "--primary-metric", help="Metric that selects the winner.")] = "ndcg@10",
    models: Annotated[str | None, typer.Option(
        "--models", help="Candidates, e.g. popularity,mf (default: all).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Hyperparameter MODEL.NAME=VALUE, e.g. --param mf.factors=32 "
        "(repeatable; VALUE is read as JSON, else as text).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the models.")] = 42,
    task_runner: Annotated[str, typer.Option(
        "--task-runner", help="Where candidates train: threads (this process) or dask.")]
    = "threads",
    dask_address: Annotated[str | None, typer.Option(
        "--dask-address", help="Dask scheduler, e.g. tcp://host:8786 (default: a local "
        "cluster; implies --task-runner dask).")] = None,
    dask_workers: Annotated[int, typer.Option(
        "--dask-workers", help="Worker processes of the local Dask cluster.")] = 2,
    network_slots: Annotated[int, typer.Option(
        "--network-slots", min=0, help="Networks (vae, dae, cfgan) trained at a time with "
        "--task-runner threads, the other candidates beside them (0: no limit).")] = 0,
    blend: Annotated[int, typer.Option(
        "--blend", min=0, max=4, help="Also train a blend of the best N candidates (weights "
        "chosen on validation; 0: none).")] = 0,
    tune_trials: Annotated[int, typer.Option(
        "--tune-trials", min=0, help="Hyperparameter search before training: most trials "
        "per family, on validation only (0: none; the configured values are trial 0).")] = 0,
    tune_seconds: Annotated[float | None, typer.Option(
        "--tune-seconds", help="Wall-time budget of each family's search (default: trials "
        "only).")] = None,
    tune_parallel: Annotated[int, typer.Option(
        "--tune-parallel", min=1, help="Trials run at a time.")] = 2,
    tune_models: Annotated[str | None, typer.Option(
        "--tune-models", help="Families to search, e.g. ease,mf (default: every candidate "
        "with a search space).")] = None,
    tune_seed: Annotated[int | None, typer.Option(
        "--tune-seed", min=0, help="Seed of the search alone (default: --seed): other "
        "trials, the same split and models.")] = None,
    gate_margin: Annotated[float, typer.Option(
        "--gate-margin", help="Relative margin over popularity to become champion.")] = 0.05,
    gate_min_users: Annotated[int, typer.Option(
        "--gate-min-users", min=0, help="Test users a comparison must rest on to replace a "
        "champion (0: any number).")] = 50,
    model_name: Annotated[str, typer.Option(
        "--registered-model-name", callback=_checked_new_name,
        envvar="SHOPREC_REGISTERED_MODEL_NAME",
        help="MLflow registered model.")] = DEFAULT_MODEL_NAME,
    max_quarantine: MaxQuarantineOpt = 0.5,
    min_users: MinUsersOpt = 10,
    min_items: MinItemsOpt = 10,
    output_dir: OutOpt = Path("runs/train"),
    summary_json: Annotated[Path | None, typer.Option(
        "--summary-json", parser=_file, help="Write the run summary as JSON.")] = None,
    pseudonymize: PseudonymizeOpt = False,
    pseudonym_secret: PseudonymSecretOpt = None,
    quantize: Annotated[str | None, typer.Option(
        "--quantize", help="Store the published model at float16 or int8 (smaller, same "
        "answers' form).")] = None,
    prune_top: Annotated[int | None, typer.Option(
        "--prune-top", min=1, help="Keep an ease winner's N largest weights per item.")]
    = None,
    popularity_epsilon: Annotated[float | None, typer.Option(
        "--popularity-epsilon", min=0.0, help="Differentially private popularity counts "
        "(the baseline and the served fallback) with this epsilon (default: exact).")] = None,
    recency_half_life_days: HalfLifeOpt = None,
    repeats: RepeatsOpt = None,
    quantity_damping: DampingOpt = None,
    choose_weighting: Annotated[bool | None, typer.Option(
        "--choose-weighting/--fixed-weighting", help="Choose the event weighting on "
        "validation before training: the one given and binary damping with repeats max at "
        "each --weighting-half-lives (and none), each scored by a quick mf. Default: chosen "
        "unless a weighting option is given.")] = None,
    weighting_half_lives: Annotated[str, typer.Option(
        "--weighting-half-lives", help="Recency half-lives in days the choice tries.")]
    = "7,30,120",
) -> None:
    """Run the training pipeline (a Prefect flow) and publish the winner to MLflow."""
    from shoprec.config import (
        DEFAULT_MODELS,
        CleaningConfig,
        SplitConfig,
        TrainingConfig,
    )

    # Everything a user typed is checked before any data is read or a server started.
    params = _parse_params(param)
    ks = _cutoffs(k)
    chosen = models.split(",") if models is not None else list(DEFAULT_MODELS)
    data_config = _pseudonymized(_data_config(interactions, items, fmt, mapping, delimiter,
                                              encoding, date_format, timestamp_unit,
        items_reading=(items_delimiter, items_encoding), decimal=decimal,
        default_event=default_event),
                                 pseudonymize, pseudonym_secret)
    split_config = SplitConfig(method=split, test_days=test_days,
                               validation_days=validation_days, test_fraction=test_fraction,
                               validation_fraction=validation_fraction, test_n=test_n,
                               validation_n=validation_n, seed=seed,
                               evaluation_users=evaluation_users or None,
                               repeat_items=repeat_items)
    cleaning_config = CleaningConfig(max_quarantine_fraction=max_quarantine,
                                     min_users=min_users, min_items=min_items,
                                     max_value=max_value)
    weighting = _training_weighting(recency_half_life_days, repeats, quantity_damping,
                                    choose_weighting, weighting_half_lives)
    training_config = TrainingConfig(models=chosen, ks=ks, primary_metric=primary_metric,
                                     seed=seed, gate_margin=gate_margin,
                                     gate_min_users=gate_min_users,
                                     registered_model_name=model_name,
                                     # MLflow's own variable, as its users set it.
                                     **({"experiment": os.environ["MLFLOW_EXPERIMENT_NAME"]}
                                        if os.environ.get("MLFLOW_EXPERIMENT_NAME") else {}),
                                     params=params,
                                     task_runner="dask" if dask_address else task_runner,
                                     dask_address=dask_address, dask_workers=dask_workers,
                                     network_slots=network_slots or None,
                                     blend=blend,
                                     tune_trials=tune_trials, tune_seconds=tune_seconds,
                                     tune_parallel=tune_parallel,
                                     tune_models=tune_models.split(",") if tune_models
                                     else None, tune_seed=tune_seed,
                                     popularity_epsilon=popularity_epsilon,
                                     quantize=quantize, prune_top=prune_top)
    from shoprec.config import check_gate_sample, check_selection

    check_gate_sample(split_config, training_config)
    check_selection(split_config, training_config)
    _writable_file(summary_json, "--summary-json")
    _writable_dir(output_dir, "--output-dir")
    from shoprec.registry.tracking import check_uri

    check_uri()  # the registry is first used after the data's preparation
    if dask_address:
        from shoprec_flows.server_guard import (
            check_dask_scheduler_answers,
            check_dask_workers_reach_prefect,
        )

        check_dask_workers_reach_prefect(dask_address)
        check_dask_scheduler_answers(dask_address)
    _running(summary_json, "train")
    began = time.perf_counter()
    # The temporary Prefect server starts while the flow, and what its candidates need
    # (TensorFlow for the networks), are imported.
    from shoprec_flows.server_guard import training_modules

    _before_flows(*training_modules(training_config.models))
    # While the temporary server starts: not after minutes of training.
    _refuse_other_kind_now(model_name, "recommender")
    # The pipeline is the Prefect flow; imported here so the core never imports Prefect.
    from shoprec_flows.training import training_pipeline

    summary = training_pipeline(data=data_config, cleaning=cleaning_config, split=split_config,
                                weighting=weighting, training=training_config,
                                output_dir=str(output_dir))
    if summary_json:  # first: the registry has changed, whatever printing meets
        _write_summary(summary_json, _finished(summary_json, "train", summary))
    _print_summary(summary)
    if summary.get("reports_missing"):
        err_console.print(_styled(("warning:", "bold yellow"),
                                  " the version is published, but the run's reports could not "
                                  f"all be logged to MLflow ({summary['reports_missing']})"),
                          highlight=False)
    console.print(f"pipeline finished in {time.perf_counter() - began:.1f} s")
    if summary_json:
        console.print(f"summary written to {summary_json}")


@app.command()
@_handle_errors
def recommend(
    user: Annotated[str | None, typer.Option("--user", help="A known shopper id.")] = None,
    recent: Annotated[str | None, typer.Option(
        "--recent-items", "--recent",
        help="Item ids the shopper just touched, comma-separated.")] = None,
    query: Annotated[str | None, typer.Option("--query", help="Search text.")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    model_name: Annotated[str, typer.Option(
        "--registered-model-name", callback=_checked_name,
        envvar="SHOPREC_REGISTERED_MODEL_NAME",
        help="MLflow registered model.")] = DEFAULT_MODEL_NAME,
    alias: Annotated[str, typer.Option("--alias", callback=_alias_given,
                                       help="Registry alias to load.")] = "champion",
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show the history items behind each recommendation.")] = False,
    diversity: Annotated[float, typer.Option(
        "--diversity", min=0.0, max=1.0,
        help="Re-rank the model's answer towards less popular items (0: its own order).")]
    = 0.0,
    stock: Annotated[Path | None, typer.Option(
        "--stock", parser=_file,
        help="CSV or Parquet with item_id and units: products with no units "
        "left are not answered.")] = None,
    similar_to: Annotated[str | None, typer.Option(
        "--similar-to", help="An item id: the items that go with it (cross-sell).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the answer as one JSON object (for scripts) instead of a "
        "table.")] = False,
) -> None:
    """Ask a registered model (default: the champion) for recommendations or search results."""
    import pandas as pd

    from shoprec.registry import tracking
    from shoprec.registry.loading import load_bundle

    if query and similar_to:
        raise ConfigError("--query searches and --similar-to finds what goes with a product: "
                          "give one of them")
    held = None
    if stock is not None:
        from shoprec.inventory import held_ids, read_stock

        held = held_ids(read_stock(stock))
    tracking.require_store()
    # The same answer as the served model's, from its bundle read directly and lazily: one
    # request needs neither the pyfunc wrapper nor the parts it does not use.
    bundle, version = load_bundle(model_name, alias=alias, lazy=True)
    if held is not None:
        from shoprec.inventory import no_units_left

        bundle.held_back = no_units_left(bundle.items.ids, held)
    from shoprec.data.schema import canonical_id

    # Read the part this request uses now: a model that cannot be read is not a bad request.
    _ = bundle.search if query else bundle.model
    if similar_to and not query and bundle.items.encode([canonical_id(similar_to)])[0] < 0:
        # The server answers such a record with an empty list (`unknown_item`); one id
        # typed here is better told.
        raise ConfigError(f"--similar-to {similar_to}: not in version {version}'s catalogue "
                          "(a product added since it was trained, or a mistyped id)")
    items = [i.strip() for i in recent.split(",") if i.strip()] if recent else []
    unknown = [i for i, at in zip(items, bundle.items.encode(
        [canonical_id(i) for i in items]), strict=True) if at < 0]
    if unknown:
        # Left out of the answer, as the server leaves them: a mistyped id read as a shopper
        # with nothing to go on.
        err_console.print(f"note: --recent-items {', '.join(unknown[:5])}"
                          + (" ..." if len(unknown) > 5 else "")
                          + f": not in version {version}'s catalogue, so not used",
                          highlight=False)
    if user and not query and not similar_to:
        from shoprec.serving.engine import stored_user_ids

        try:
            stored = stored_user_ids(bundle, [user])[0]
        except ValueError:
            stored = None  # refused below, as the server refuses it
        if stored is not None and stored not in bundle.users:
            # A typo or another form of the id was answered by popularity like any
            # shopper with no history, under the same title.
            err_console.print(f"note: user {user} is not among version {version}'s "
                              f"{len(bundle.users):,} shoppers (a new or erased shopper, "
                              "or another form of the id): answered as a new shopper",
                              highlight=False)
    request = pd.DataFrame({"user_id": [user or ""], "recent_items": [items],
                            "query": [query or ""], "k": [k], "explain": [explain],
                            "diversity": [diversity], "item_id": [similar_to or ""]})
    try:
        response = bundle.predict(request).iloc[0]
    except ConfigError:
        raise  # the set-up's (another pseudonymisation key), said as it is
    except (ValueError, TypeError) as exc:  # a request the model refuses (no search index...)
        raise ConfigError(f"invalid request: {exc}") from None
    reasons = response["explanations"] if explain else [None] * len(response["item_ids"])
    if as_json:
        _print_answer_json(response, reasons, model_name=model_name, alias=alias,
                           version=version)
        return
    what = f"search {query!r}" if query else f"items that go with {similar_to}" \
        if similar_to else "recommendations"
    who = f" for user {user}" if user else (" for a new shopper" if items else "")
    table = Table(title=f"{model_name}@{alias} (version {version}): {what}{who} "
                        f"({response['source']})")
    columns = ("rank", "item_id", "title", "score") + (("because",) if explain else ())
    for column in columns:
        # An id is wrapped, never cut with "…": the cut form is no id to copy.
        table.add_column(column, justify="right" if column in ("rank", "score") else "left",
                         overflow="fold" if column == "item_id" else "ellipsis")
    for rank, (item, title, score, why) in enumerate(zip(
            response["item_ids"], response["titles"], response["scores"], reasons,
            strict=True), 1):
        cells = [str(rank), _printable(item), _printable(title or ""), f"{score:.4g}"]
        if explain:
            cells.append("; ".join(
                f"{_printable(r['title'] or r['item_id'])} ({_percent(r['share'])})"
                for r in why) or "-")
        table.add_row(*cells)
    console.print(table)
    if not response["item_ids"]:
        # A query of emoji or punctuation alone has nothing the index is made of.
        searchable = not query or any(ch.isalnum() for ch in query)
        if not searchable:
            console.print("nothing matched: the query has no letters or digits to search by")
        elif query or similar_to:
            console.print("nothing matched")
        else:
            # A shopper who owns every product the model ranks (a tiny shop) is told so,
            # not that the model found nothing.
            console.print("nothing left to recommend: every product the model can rank is "
                          "already in this shopper's history"
                          + (" or has no units left in --stock" if held is not None else ""),
                          soft_wrap=True)


@app.command(cls=_SummaryCommand)
@_handle_errors
@_records_failure("forecast")
def forecast(
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    items_delimiter: ItemsDelimiterOpt = None,
    items_encoding: ItemsEncodingOpt = None,
    decimal: DecimalOpt = None,
    default_event: DefaultEventOpt = None,
    date_format: DateFormatOpt = None,
    timestamp_unit: TimestampUnitOpt = None,
    test_weeks: Annotated[int, typer.Option("--test-weeks", min=1, max=52,
                                            help="Weeks held out to score.")] = 8,
    horizon: Annotated[int, typer.Option("--horizon", min=1, max=26,
                                         help="Weeks forecast ahead.")] = 4,
    output_dir: Annotated[str, typer.Option(
        "--output-dir", help="Root of the forecast's Parquet data set.")] = "runs/forecast",
    quarantine_dir: Annotated[str | None, typer.Option(
        "--quarantine-dir", help="Where the rows set aside by cleaning go (default: beside "
        "--output-dir, named after it + '_quarantine'; '' for nowhere).")] = None,
    gate_margin: Annotated[float, typer.Option(
        "--gate-margin", min=0.0, max=0.99, help="How much lower (relative) than the best "
        "naive baseline's the model's WAPE must be to become champion.")] = 0.05,
    max_iter: Annotated[int, typer.Option(
        "--max-iter", min=1, max=5000, help="Boosting iterations of each model.")] = 300,
    learning_rate: Annotated[float, typer.Option(
        "--learning-rate", min=0.0, max=1.0,
        help="Boosting learning rate (above 0).")] = 0.05,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, max=256, help="OpenMP threads of the boosting: more are faster "
        "on idle cores, many times slower beside other work.")] = 1,
    model_name: Annotated[str, typer.Option(
        "--registered-model-name", callback=_checked_new_name,
        envvar="SHOPREC_DEMAND_MODEL_NAME",
        help="MLflow registered model of the forecast.")]
    = "shoprec-demand",
    summary_json: Annotated[Path | None, typer.Option(
        "--summary-json", parser=_file, help="Write the run summary as JSON.")] = None,
    min_users: MinUsersOpt = 10,
    min_items: MinItemsOpt = 10,
) -> None:
    """Forecast each product's weekly units (a Prefect flow): backtest, then the next weeks.

    The forecast is registered as a version of shoprec-demand (alias challenger) and becomes
    champion when it passes the gate.
    """
    from shoprec.config import ForecastConfig

    data_config = _data_config(interactions, items, fmt, mapping, delimiter, encoding,
                               date_format, timestamp_unit,
        items_reading=(items_delimiter, items_encoding), decimal=decimal,
        default_event=default_event)
    config = ForecastConfig(test_weeks=test_weeks, horizon=horizon, output_dir=output_dir,
                            quarantine_dir=quarantine_dir, gate_margin=gate_margin,
                            max_iter=max_iter, learning_rate=learning_rate, threads=threads,
                            registered_model_name=model_name)
    _writable_file(summary_json, "--summary-json")
    if quarantine_dir:
        _writable_dir(Path(quarantine_dir), "--quarantine-dir")
    _writable_dir(Path(output_dir), "--output-dir")
    _running(summary_json, "forecast")
    _before_flows("shoprec_flows.forecast")
    _refuse_other_kind_now(model_name, "forecast")  # not after minutes of backtest
    from shoprec_flows.forecast import demand_forecast
    began = time.perf_counter()
    from shoprec.config import CleaningConfig

    # The validation's floors, as train's and validate's (its hint names them).
    summary = demand_forecast(data=data_config, forecast=config, cleaning=CleaningConfig(
        min_users=min_users, min_items=min_items))
    if summary_json:
        _write_summary(summary_json, _finished(summary_json, "forecast", summary))
    table = Table(title=f"Demand forecast: {summary['products']:,} products x "
                        f"{summary['weeks']} weeks, last {test_weeks} held out")
    for column in ("method", "wape", "mae", "bias"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, values in sorted(summary["test"].items(), key=lambda kv: kv[1]["wape"]):
        table.add_row(method, f"{values['wape']:.4f}", f"{values['mae']:.2f}",
                      f"{values['bias']:+.4f}")
    console.print(table)
    counts = summary["data"]
    console.print(f"data: {counts['rows_in']:,} rows in, {counts['rows_clean']:,} clean, "
                  f"{counts['rows_quarantined']:,} quarantined ("
                  + (", ".join(f"{k} {v:,}" for k, v in counts["quarantined_by_reason"].items())
                     or "none") + ")"
                  + (f" -> {counts['quarantine_files']['interactions']}"
                     if counts.get("quarantine_files") else ""), highlight=False)
    if summary.get("category_forecast_file"):
        console.print(f"forecast per category -> {summary['category_forecast_file']}",
                      highlight=False)
    console.print(f"forecast of the next {horizon} weeks -> {summary['forecast_file']}; "
                  f"MLflow run {summary['mlflow_run_id']} (experiment {config.experiment}); "
                  f"{time.perf_counter() - began:.1f} s", highlight=False)
    registered, gate = summary["registered"], summary["gate"]
    console.print(f"registered {registered['name']} version {registered['version']} with "
                  f"aliases {', '.join(registered['aliases'])}; gate "
                  f"{'pass' if gate['passed'] else 'fail'}: "
                  + "; ".join(f"{c['name']}: {'pass' if c['passed'] else 'fail'} ({c['reason']})"
                              for c in gate["checks"]), highlight=False)


@app.command()
@_handle_errors
def forget(
    user: Annotated[str, typer.Argument(help="The shopper's id (raw, or its pseudonym); '-' "
                                        "reads it from standard input, out of `ps` and the "
                                        "shell's history.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "",
    by: Annotated[str, typer.Option(
        "--by", help="Who asks, recorded (default: the operating-system user).")] = "",
    pseudonym_secret: Annotated[str | None, typer.Option(
        "--pseudonym-secret", help="Prefect Secret block with the pseudonymisation key "
        "(default: SHOPREC_PSEUDONYM_KEY), so pseudonymised data is reached too.")] = None,
    model_name: Annotated[str, typer.Option(
        "--registered-model-name", envvar="SHOPREC_REGISTERED_MODEL_NAME",
        help="The model whose champion is asked whether it knows the id (a typo is said).")]
    = DEFAULT_MODEL_NAME,
) -> None:
    """Erase a shopper: no served answer uses their history from now, no training their rows.

    Appends a record to the suppression list (SHOPREC_SUPPRESSIONS, default
    ./suppressions.jsonl): a hash of the id, never the id, with who asked, when and why.
    Not reached: model versions already registered (their artifacts hold the id until
    removed: `shoprec prune` removes versions without an alias), Prefect's cached results,
    batch files and quarantine files already written (README, Privacy).
    """
    from shoprec.config import DataConfig
    from shoprec.privacy import SuppressionList, is_pseudonym, key_from_environment

    if user == "-":
        user = sys.stdin.readline().strip()
    key = key_from_environment()
    if pseudonym_secret:
        from shoprec_tasks.data import resolve_pseudonym_key

        key = resolve_pseudonym_key(DataConfig(pseudonymize=True,
                                               pseudonym_secret=pseudonym_secret))
    suppressions = SuppressionList()
    # The list holds the id's hash alone: an id written into the reason is taken out
    # (as a word: "ticket 4123" does not hold the id 12).
    from shoprec.data.schema import canonical_id

    ident = canonical_id(user)
    named = re.compile(rf"(?<![\w.]){re.escape(ident)}(?:\.0)?(?![\w]|\.\d)",
                       re.IGNORECASE) if ident else None
    if named is not None and (named.search(reason) or named.search(by)):
        reason, by = (named.sub("[the shopper's id]", text) for text in (reason, by))
        err_console.print("note: --reason or --by held the shopper's id; it was recorded as "
                          "[the shopper's id] (describe a request by a ticket number)",
                          highlight=False)
    elif ident and ident.lower() in f"{reason} {by}".lower():
        # Glued to other text (customer17850): not cut out, which could cut another
        # number; said, as before.
        err_console.print("note: --reason or --by may hold the shopper's id, and is recorded "
                          "as written: describe the request without it (a ticket number)",
                          highlight=False)
    record = suppressions.add(user, by or None, reason, key)
    # After the record: a registry that does not answer must not stand between a person
    # and an erasure.
    known = _champion_knows(user, key, model_name)
    if known is not None and known[1] is False:
        # The id is not repeated: `forget -` keeps it out of logs as well as `ps`.
        err_console.print(f"note: {known[0]} does not know this shopper id: check its "
                          "spelling and form (case, a customer number rather than an "
                          "e-mail), or the shopper had no row the model kept; the record is "
                          "kept and erases this id wherever it appears", highlight=False)
    # Only where it can matter: a champion that was read and is not pseudonymised makes it
    # noise on every erasure.
    pseudonymised = known is None or known[2]
    unkeyed = key is None and pseudonymised and not is_pseudonym(user.strip().lower())
    if unkeyed:
        err_console.print("note: no pseudonymisation key (SHOPREC_PSEUDONYM_KEY or "
                          "--pseudonym-secret), so only the id as given was recorded. Every "
                          "later training quarantines the shopper's rows, pseudonymised or "
                          "not, and a server holding the key drops requests naming the id; "
                          "but a model already trained with --pseudonymize holds their "
                          "pseudonym, which its batches and requests naming the pseudonym "
                          "still use until the next training: run again with the key, or "
                          "pass the pseudonym", highlight=False)
    sessions = _forget_sessions(user, key)
    if sessions and unkeyed:
        sessions += " (a server holding the key stores sessions under the pseudonym: " \
            "those were not reached)"
    console.print(f"erasure recorded in {suppressions.path.resolve()} at "
                  f"{record['requested_at']} by "
                  f"{record['requested_by']} ({len(record['subjects'])} subject hash"
                  f"{'es' if len(record['subjects']) > 1 else ''}); served models stop using "
                  "the shopper's history on their next request, the next training "
                  "quarantines their rows as 'erased'"
                  # Without the key, a pseudonymised champion's batch still names them.
                  + ("" if unkeyed else ", and the next batch writes no rows for them")
                  + (f"; {sessions}" if sessions else "")
                  + ". Not reached: batch output already written (delete its "
                  "generated_date= folders or their rows), older model versions' "
                  "artifacts, earlier quarantine files, Prefect's cached results (until they "
                  "expire) and another server's live sessions file", highlight=False)


def _forget_sessions(user: str, key: Any) -> str | None:
    """Drop the shopper's live session from this folder's sessions file, if there is one.

    Its events (what they looked at in the last 24 hours) stayed until they expired.
    Returns what was done, or ``None`` where no sessions file is found.
    """
    import sqlite3

    from shoprec.data.schema import canonical_id
    from shoprec.serving.sessions import DEFAULT_SESSIONS, SESSIONS_ENV, SessionStore

    path = Path(os.environ.get(SESSIONS_ENV) or DEFAULT_SESSIONS)
    if not path.is_file():
        return None
    ids = [canonical_id(user)]
    if key is not None:
        ids += key.pseudonyms([ids[0]])
    try:
        dropped = SessionStore(path).forget(ids)
    except (sqlite3.Error, OSError, ValueError) as exc:
        err_console.print(f"warning: the live sessions in {path} could not be cleared "
                          f"({exc}); they expire within 24 hours", highlight=False)
        return None
    return (f"{dropped} live session event{'' if dropped == 1 else 's'} dropped from "
            f"{path.resolve()}")


def _champion_knows(user: str, key: Any, model_name: str) -> tuple[str, bool | None, bool] | None:
    """Whether the champion of ``model_name`` knows the shopper ``user``.

    Returns ``(which model, known, pseudonymised)``, ``known`` being ``None`` when it
    cannot tell (pseudonymised ids, no key given); ``None`` when no champion can be read
    (no registry here: none is created). Only a local SQLite registry is asked: a server
    that does not answer held an erasure for 90 s.
    """
    from shoprec.data.schema import canonical_id
    from shoprec.privacy import is_pseudonym
    from shoprec.registry import tracking

    path = tracking.sqlite_path(tracking.tracking_uri())
    if path is None or not path.exists():
        return None
    try:
        from shoprec.registry.loading import load_bundle

        bundle, version = load_bundle(model_name, alias="champion", lazy=True)
    except Exception as exc:  # noqa: BLE001 - the erasure is recorded whatever the registry
        logging.getLogger(__name__).debug("no champion of %s to check the id against: %s",
                                          model_name, exc)
        return None
    which = f"{model_name}@champion (version {version})"
    text = canonical_id(user)
    folded = text.lower() if is_pseudonym(text.lower()) else text
    pseudonymised = bool(bundle.meta.get("pseudonym_key_id"))
    if pseudonymised and not is_pseudonym(folded):
        if key is None or key.id != bundle.meta.get("pseudonym_key_id"):
            return which, None, True
        folded = key.pseudonyms([folded])[0]
    return which, folded in bundle.users, pseudonymised


ModelNameOpt = Annotated[str, typer.Option(
    "--registered-model-name", callback=_checked_name, envvar="SHOPREC_REGISTERED_MODEL_NAME",
    help="MLflow registered model (one per shop: set the variable in each shop's shell).")]
ByOpt = Annotated[str, typer.Option(
    "--by", help="Who asks, recorded in the registry (default: the operating-system user).")]


def _print_decision(decision: dict[str, Any]) -> None:
    outcome = ("promoted (forced)" if decision["forced"] and decision["promoted"] else
               "promoted" if decision["promoted"] else
               "compared only (dry run)" if decision.get("dry_run") else "refused")
    champion = decision["champion_version"]
    on = f"on {decision['users']:,} test users" if decision["users"] else "not compared"
    table = Table(title=f"{decision['name']} version {decision['candidate_version']} vs "
                        f"champion {'version ' + champion if champion else '(none)'} "
                        f"{on}: {outcome}")
    for column in ("metric", "candidate", "champion", "delta", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for c in decision["comparisons"]:
        table.add_row(c["metric"] + (" (decides)" if c["decides"] else ""),
                      _fmt(c["candidate"]), _fmt(c["champion"]),
                      "-" if c["delta"] is None else f"{c['delta']:+.4f}", c["verdict"])
    if decision["comparisons"]:
        console.print(table)
    else:  # nothing was compared: the title alone, not an empty table
        console.print(str(table.title), highlight=False, soft_wrap=True)
    if decision.get("basis"):
        console.print(f"compared: {decision['basis']}", highlight=False, soft_wrap=True)
    if decision["forced"] and decision["promoted"] and not decision["passed"]:
        # The comparison failed and the person overrode it: said as such, not as a "fail"
        # followed by the champion moving.
        console.print(f"decision: the comparison would refuse it ({decision['why']}); "
                      "promoted anyway with --force", highlight=False, soft_wrap=True)
    else:
        console.print(f"decision: {'pass' if decision['passed'] else 'fail'}: "
                      f"{decision['why']}", highlight=False, soft_wrap=True)


@app.command()
@_handle_errors
def promote(
    version: Annotated[str | None, typer.Option(
        "--version", help="Version to promote (default: the current challenger).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Promote even if it is worse than the champion (needs --reason).")]
    = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the tags.")] = "",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Compare and print the table only: move no alias, write no tag.")]
    = False,
    by: ByOpt = "",
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    items_delimiter: ItemsDelimiterOpt = None,
    items_encoding: ItemsEncodingOpt = None,
    decimal: DecimalOpt = None,
    default_event: DefaultEventOpt = None,
    date_format: DateFormatOpt = None,
    timestamp_unit: TimestampUnitOpt = None,
    max_value: MaxValueOpt = 1e6,
    max_quarantine: MaxQuarantineOpt = 0.5,
    min_users: MinUsersOpt = 10,
    min_items: MinItemsOpt = 10,
    pseudonymize: PseudonymizeOpt = False,
    pseudonym_secret: PseudonymSecretOpt = None,
    split: Annotated[str, typer.Option("--split", help="temporal, random or leave-last.")]
    = "temporal",
    test_days: Annotated[float, typer.Option("--test-days")] = 30.0,
    validation_days: Annotated[float, typer.Option("--validation-days")] = 30.0,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.2,
    validation_fraction: Annotated[float, typer.Option("--validation-fraction")] = 0.1,
    test_n: Annotated[int, typer.Option("--test-n")] = 1,
    validation_n: Annotated[int, typer.Option("--validation-n")] = 1,
    repeat_items: Annotated[bool | None, typer.Option(
        "--repeat-items/--no-repeat-items", help="Count reorders as relevant, as `train "
        "--repeat-items` (default: as the version promoted was trained).")] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 10 or 5,10,20.")] = "10",
    primary_metric: Annotated[str, typer.Option(
        "--primary-metric", help="Metric that decides.")] = "ndcg@10",
    margin: Annotated[float, typer.Option(
        "--margin", help="Relative margin the candidate must clear over the champion.")] = 0.0,
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
    recency_half_life_days: HalfLifeOpt = None,
    repeats: RepeatsOpt = None,
    quantity_damping: DampingOpt = None,
) -> None:
    """Promote a version (by default the challenger) to champion, compared like for like.

    Both recipes are retrained on the latest data's training split and scored on its test users
    (a Prefect flow). The data options are `train`'s: give the ones the versions were trained
    with.
    """
    from shoprec.config import CleaningConfig, PromotionConfig, SplitConfig

    data = _pseudonymized(_data_config(interactions, items, fmt, mapping, delimiter, encoding,
                                       date_format, timestamp_unit,
        items_reading=(items_delimiter, items_encoding), decimal=decimal,
        default_event=default_event),
                          pseudonymize, pseudonym_secret)
    cleaning_config = CleaningConfig(max_quarantine_fraction=max_quarantine,
                                     min_users=min_users, min_items=min_items,
                                     max_value=max_value)
    config = PromotionConfig(registered_model_name=model_name, version=version, ks=_cutoffs(k),
                             primary_metric=primary_metric, margin=margin, force=force,
                             reason=reason, requested_by=by, dry_run=dry_run)
    # The registry is checked before minutes of data preparation.
    from shoprec.registry import tracking
    from shoprec.registry.promotion import resolve_candidate

    tracking.require_store()
    chosen = resolve_candidate(model_name, version)
    from shoprec.registry.aliases import CHAMPION, alias_version
    from shoprec.registry.recipe import trained_with_repeat_items

    if repeat_items is None:
        # A repeat-purchase champion compared with reorders left out failed every time,
        # its recipe skipped ("again" needs --repeat-items), and only --force was left.
        repeat_items = bool(trained_with_repeat_items(model_name, chosen))
    champion_version = alias_version(model_name, CHAMPION)
    theirs = trained_with_repeat_items(model_name, champion_version) \
        if champion_version else None
    if theirs is not None and theirs != repeat_items:
        # The nightly gate refuses this change; a promotion makes it, said as such.
        console.print(f"note: champion version {champion_version} was trained "
                      f"{'with' if theirs else 'without'} --repeat-items and this comparison "
                      f"is {'with' if repeat_items else 'without'} it: promoting version "
                      f"{chosen} makes the served lists "
                      f"{'keep' if repeat_items else 'leave out'} a shopper's own items",
                      highlight=False, soft_wrap=True)
    split_config = SplitConfig(method=split, test_days=test_days,
                               validation_days=validation_days, test_fraction=test_fraction,
                               validation_fraction=validation_fraction, test_n=test_n,
                               validation_n=validation_n, repeat_items=repeat_items)
    from shoprec.registry.demand import is_forecast_version
    from shoprec.registry.promotion import PromotionError

    if champion_version == chosen:
        # What a first `shoprec promote` meets after a training that passed its gate (it
        # sets both aliases): said now, not after minutes of data preparation.
        raise PromotionError(f"{model_name} version {chosen} is already the champion"
                             f"{'' if version else ' (the challenger is the champion)'}; "
                             "nothing to promote")

    if is_forecast_version(model_name, chosen):
        raise ConfigError(f"{model_name} version {chosen} is a demand forecast: `shoprec "
                          "promote` compares recommenders. A forecast becomes champion through "
                          "the gate of `shoprec forecast`; `shoprec rollback "
                          f"--registered-model-name {model_name}` restores the previous one")
    # Weighted as the version was trained (its recipe), unless told otherwise.
    weighting = _weighting(recency_half_life_days, repeats, quantity_damping) \
        or _recorded_weighting(model_name, chosen)
    # Every option is checked before the temporary Prefect server starts.
    _before_flows("shoprec_flows.operations")
    from shoprec_flows.operations import promote_model

    # Which version is compared, before minutes of work: the nightly training may have
    # moved challenger off the version an A/B test served.
    console.print(f"comparing {model_name} version {chosen}"
                  f"{'' if version else ' (the challenger now)'} with the champion",
                  highlight=False)
    decision = promote_model(promotion=config, data=data, cleaning=cleaning_config,
                             split=split_config, weighting=weighting)
    _print_decision(decision)
    if dry_run:
        named = "" if model_name == DEFAULT_MODEL_NAME else \
            f" --registered-model-name {model_name}"
        # A failed comparison is refused without --dry-run too (exit 4): the way past it
        # is --force with a reason, said as such.
        forced = "" if decision["passed"] else " --force --reason '...'"
        console.print(f"dry run: no alias moved; to promote it, the same command without "
                      f"--dry-run (`shoprec promote --version {chosen}{named}{forced}` and "
                      "the same data options)"
                      + ("" if decision["passed"] else ": the comparison failed, so only "
                         "with --force and a reason"), highlight=False, soft_wrap=True)
        return
    console.print(f"champion is now {model_name} version {decision['candidate_version']}"
                  + (f"; previous-champion is version {decision['champion_version']}"
                     if decision["champion_version"] else ""))
    if decision["champion_version"]:
        console.print(_RESTART_SERVERS.format(version=decision["champion_version"]))


@app.command()
@_handle_errors
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the tags.")] = "",
    by: ByOpt = "",
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
) -> None:
    """Point champion back at previous-champion (a Prefect flow)."""
    from shoprec.registry import tracking
    from shoprec.registry.promotion import check_rollback

    tracking.require_store()
    check_rollback(model_name)  # nothing to roll back to: said before Prefect starts
    _before_flows("shoprec_flows.operations")
    from shoprec_flows.operations import rollback_model

    moved = rollback_model(registered_model_name=model_name, reason=reason, requested_by=by)
    if moved.get("resumed"):
        console.print(f"{model_name}: a rollback that stopped midway was finished as it "
                      f"was asked (by {moved['by']} at {moved['at']}, reason "
                      f"{moved['reason']!r}); there is no earlier champion to go back to")
    console.print(f"{model_name}: champion moved from version {moved['from']} back to version "
                  f"{moved['to']} (by {moved['by']} at {moved['at']})")
    console.print(_RESTART_SERVERS.format(version=moved["from"]))


@app.command()
@_handle_errors
def prune(
    keep: Annotated[int, typer.Option(
        "--keep", min=1, help="How many of the newest versions stay whatever they are.")],
    older_than_days: Annotated[float | None, typer.Option(
        "--older-than-days", min=0, help="Only versions registered more than this many "
        "days ago go.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would go, and delete nothing.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "",
    by: ByOpt = "",
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
) -> None:
    """Delete old versions no alias points at, with their logged models and files.

    The newest --keep versions stay, and so does every version an alias points at and
    every version a person registered by hand. What went (each version's tags, and the
    alias moves that name no kept version) is logged to an MLflow run
    `prune <model>` (a Prefect flow).
    """
    from shoprec.registry import retention, tracking

    tracking.require_store()
    if dry_run:
        chosen = retention.plan(model_name, keep, older_than_days).to_dict()
        _print_prune(chosen, done=False)
        return
    _before_flows("shoprec_flows.operations")
    from shoprec_flows.operations import prune_registry

    _print_prune(prune_registry(registered_model_name=model_name, keep=keep,
                                older_than_days=older_than_days, reason=reason,
                                requested_by=by), done=True)


def _print_prune(result: dict[str, Any], done: bool) -> None:
    from shoprec.registry.retention import PUBLISHED_TAG

    name, pruned = result["name"], result["pruned"]
    if not pruned and not result["moves_archived"]:
        console.print(f"{name}: nothing to prune; {len(result['kept'])} versions kept")
        return
    table = Table(title=f"{name}: {'deleted' if done else 'would delete'} {len(pruned)} "
                        f"version{'' if len(pruned) == 1 else 's'}")
    columns = ("version", "registered", "gate", "logged model") + (("bytes",) if done else ())
    for column in columns:
        table.add_column(column, justify="right" if column in ("version", "bytes") else "left")
    for version in pruned:
        row = [version["version"], version["created"], version["tags"].get(PUBLISHED_TAG, ""),
               (version["model_id"] or "-") if version["model_goes"]
               else "kept (another version uses it)"]
        table.add_row(*row, *((f"{version['size_bytes'] or 0:,}",) if done else ()))
    if pruned:
        console.print(table)
    reasons: dict[str, int] = {}
    for why in result["kept"].values():
        reasons[why] = reasons.get(why, 0) + 1
    console.print(f"kept {len(result['kept'])}: " + "; ".join(
        f"{count} {why}" for why, count in sorted(reasons.items())), highlight=False)
    moves = result["moves_archived"]
    moves = f"{moves} alias move{'' if moves == 1 else 's'}"
    if done:
        console.print(f"freed {result['freed_bytes']:,} bytes; {moves} naming no kept "
                      f"version left the registered model's tags. The record is "
                      f"MLflow run {result['run_id']} (prune {name})", highlight=False)
    else:
        console.print(f"{moves} would leave the tags for the prune's MLflow run; "
                      "run again without --dry-run to delete", highlight=False)


#: The most characters of held-back ids `serve` hands its workers in one environment
#: variable (Linux refuses a variable over 128 KiB).
_HELD_LIMIT = 120_000

#: ``batch --forecast``'s default: the registered forecast's champion.
_DEFAULT_FORECAST = BatchConfig.model_fields["forecast"].default

#: Said after champion moves: a server resolves the alias when it starts (`serve`).
_RESTART_SERVERS = ("a `shoprec serve` started before this keeps serving the version it "
                    "loaded (version {version}) until it is started again")


def _pinned_version(model_name: str, alias: str, version: str | None) -> str:
    """The version number given with ``--version`` ("" without one), checked for form.

    Raises:
        ConfigError: Both ``--version`` and another ``--alias`` than the champion, or a
            version that is not a number.
    """
    if version is None:
        return ""
    text = version.strip()
    if alias != "champion":
        raise ConfigError(f"--version {text} and --alias {alias} name two models: give one")
    if not text.isdigit():
        raise ConfigError(f"--version is a registry version number (1, 2, ...) of "
                          f"{model_name}, not {version!r}")
    return text


def _model_and_alias(uri: str) -> tuple[str, str]:
    """``models:/name@alias`` -> (name, alias); other URIs are refused."""
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if not uri.startswith("models:/") or not name or not alias:
        raise ConfigError(f"--forecast {uri!r}: give models:/NAME@ALIAS or the forecast's "
                          "Parquet file or folder")
    return name, alias


@app.command()
@_handle_errors
def batch(
    output_dir: Annotated[str, typer.Option(
        "--output-dir", help="Root of the date-partitioned Parquet data set.")] = "runs/batch",
    k: Annotated[int, typer.Option("--k", help="Recommendations per user.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Users per batch.")] = 4096,
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
    alias: Annotated[str, typer.Option("--alias", callback=_alias_given,
                                       help="Registry alias to load.")] = "champion",
    version: Annotated[str | None, typer.Option(
        "--version", help="A version number to score with instead of --alias (an A/B "
        "test's arm, pinned while the aliases move).")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Add a 'because' column: the history items behind each row.")]
    = False,
    diversity: Annotated[float, typer.Option(
        "--diversity", min=0.0, max=1.0,
        help="Re-rank each user's list towards less popular items (0: the model's order).")]
    = 0.0,
    stock: Annotated[Path | None, typer.Option(
        "--stock", parser=_file,
        help="CSV or Parquet with item_id and units on hand: down-weight products "
        "forecast to sell out beyond it.")] = None,
    forecast: Annotated[str, typer.Option(
        "--forecast", help="The demand forecast used with --stock: a model URI (default: "
        "the champion of SHOPREC_DEMAND_MODEL_NAME, else of shoprec-demand), the "
        "forecast's Parquet file or folder, or none (stock alone: only products with no "
        "units left are held back).")] = _DEFAULT_FORECAST,
    stock_weeks: Annotated[int, typer.Option(
        "--stock-weeks", min=0, max=26, help="Forecast weeks the stock must last (0: all).")]
    = 0,
) -> None:
    """Write the top K of every known user as Parquet partitioned by date (a Prefect flow).

    With --stock, each product's relevance is multiplied by the share of its forecast
    demand that its stock covers (products with none left are not recommended).
    """
    if stock is None and forecast != _DEFAULT_FORECAST:
        # Said in the command's words (the form's rule names its fields).
        raise ConfigError("--forecast is read with --stock (the share of each product's "
                          "forecast demand its units cover); give --stock FILE too")
    demand = os.environ.get("SHOPREC_DEMAND_MODEL_NAME", "").strip()
    pinned = _pinned_version(model_name, alias, version)
    config = BatchConfig(registered_model_name=model_name, alias=alias, version=pinned,
                         output_dir=output_dir,
                         k=k, batch_size=batch_size, explain=explain, diversity=diversity,
                         stock_path=str(stock or ""), forecast=forecast,
                         stock_weeks=stock_weeks,
                         # The shop's own forecast, as its forecasts register (read with
                         # a stock file only).
                         **({"demand_model_name": demand} if demand and stock else {}))
    from shoprec.registry import tracking
    from shoprec.registry.loading import no_alias_message
    from shoprec.registry.promotion import alias_version

    tracking.require_store()
    if pinned:
        from shoprec.registry.promotion import resolve_candidate

        resolve_candidate(model_name, pinned)  # a version that does not exist is said now
    elif alias_version(model_name, alias) is None:
        raise ConfigError(no_alias_message(model_name, alias))
    from shoprec.batch import check_day_file

    # Said once, before any flow (the flow checks again, for the Prefect form's runs).
    check_day_file(output_dir, model_name, config.scored_by)
    # Before the output folder is made: a refused Prefect home leaves nothing behind.
    _check_prefect_home()
    _writable_dir(Path(output_dir), "--output-dir")
    # Which shoppers are left out is the list's: a batch run where it is not wrote the
    # erased shoppers' rows again, without a word.
    console.print(_erasure_list_line(), highlight=False, soft_wrap=True)
    if stock is not None:
        from shoprec.inventory import read_forecast, read_stock

        # Bad stock or a missing forecast is reported before the model is loaded.
        read_stock(stock)
        if ":/" not in forecast:
            read_forecast(forecast)  # a file, a folder, or none
        else:
            from shoprec.registry.demand import is_forecast_version

            demand_name, demand_alias = _model_and_alias(forecast)
            found = alias_version(demand_name, demand_alias)
            if found is None:
                raise ConfigError(f"the demand forecast {forecast!r} does not exist in the "
                                  "registry; run `shoprec forecast` first, pass --forecast "
                                  "PATH of its Parquet output, or --forecast none to hold "
                                  "back only the products with no units left")
            if not is_forecast_version(demand_name, found):
                raise ConfigError(f"--forecast {forecast!r} is version {found} of "
                                  f"{demand_name}, which is not a demand forecast; give "
                                  "models:/shoprec-demand@champion or a forecast file")
    _before_flows("shoprec_flows.operations")
    from shoprec_flows.operations import batch_recommendations

    result = batch_recommendations(batch=config)
    console.print(f"{result['users']:,} users, {result['rows']:,} rows by version "
                  f"{result['model_version']}{_version_age(model_name, result['model_version'])}"
                  f" in {result['seconds']:.1f} s "
                  f"({result['users_per_second']:,.0f} users/s) -> {result['path']}"
                  + (f"; {result['stock_limited']:,} products down-weighted for stock"
                     if stock is not None else ""), highlight=False, soft_wrap=True)


@app.command()
@_handle_errors
def serve(
    port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                      help="Port to listen on.")] = 5000,
    host: Annotated[str, typer.Option(
        "--host", help="Interface to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes.")] = 1,
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
    alias: Annotated[str, typer.Option("--alias", callback=_alias_given,
                                       help="Registry alias to serve.")]
    = "champion",
    version: Annotated[str | None, typer.Option(
        "--version", help="A version number to serve instead of --alias (an A/B test's "
        "arm, pinned while the aliases move).")] = None,
    max_body_bytes: Annotated[int, typer.Option(
        "--max-body-bytes", min=1, help="Largest request body (HTTP 413 above it).")] = 1 << 20,
    max_records: Annotated[int, typer.Option(
        "--max-records", min=1, help="Most request records per request (HTTP 413 above it).")]
    = 1000,
    max_query_chars: Annotated[int, typer.Option(
        "--max-query-chars", min=1, help="Longest search query (HTTP 400 above it).")] = 500,
    max_answer_items: Annotated[int, typer.Option(
        "--max-answer-items", min=1,
        help="Most items one answer may hold, k summed over its records (HTTP 413 above "
        "it).")] = 100_000,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", min=1,
        help="Open connections per worker (idle keep-alive ones count) beyond which new "
        "requests are answered 503 (shed, not queued).")] = 1000,
    request_timeout: Annotated[int, typer.Option(
        "--request-timeout", min=1,
        help="Seconds a request may take to arrive, headers and body, before its "
        "connection is closed (slow or idle clients cannot hold the connections).")] = 30,
    mlflow_server: Annotated[bool, typer.Option(
        "--mlflow-server", help="Run MLflow's stock `mlflow models serve` instead: every "
        "request goes through pandas and schema enforcement (several times slower).")]
    = False,
    diversity: Annotated[float, typer.Option(
        "--diversity", min=0.0, max=1.0,
        help="Default weight of the novelty re-ranking (0: the model's order; a request's "
        "own 'diversity' field wins).")] = 0.0,
    explanations: Annotated[bool | None, typer.Option(
        "--explanations/--no-explanations", help="Serve shopper data: 'explain': true, and "
        "the storefront page's shopper list and histories (default: only on a loopback "
        "--host, since they name shoppers' past purchases to whoever can reach the server).")]
    = None,
    sessions: Annotated[str, typer.Option(
        "--sessions", help="SQLite file of the live sessions fed by POST /events ('' turns "
        "them off).")] = "sessions.sqlite",
    stock: Annotated[Path | None, typer.Option(
        "--stock", parser=_file,
        help="CSV or Parquet with item_id and units: products with no units left "
        "are never answered (read when the server starts).")] = None,
) -> None:
    """Serve models:/NAME@ALIAS over HTTP: /invocations, /events and a storefront page at /.

    The alias is resolved when the server starts: restart it after a promotion or rollback.
    """
    import os

    from shoprec.registry import tracking
    from shoprec.registry.promotion import alias_version

    _check_port_free(host, port)
    held = ""
    if stock is not None:
        from shoprec.inventory import held_ids, read_stock

        # Read once, here: the workers (and one started again later) get these ids.
        held = json.dumps(held_ids(read_stock(stock)))
        if len(held) > _HELD_LIMIT:
            raise ConfigError(f"--stock {stock}: {held.count(',') + 1:,} products have no "
                              "units left, more than the server can hand its workers; give "
                              "a file of the products to hold back")
    pinned = _pinned_version(model_name, alias, version)
    tracking.require_store()
    if pinned:
        from shoprec.registry.promotion import resolve_candidate

        version = resolve_candidate(model_name, pinned)
    else:
        version = alias_version(model_name, alias)
    if version is None:
        from shoprec.registry.loading import no_alias_message

        raise ConfigError(no_alias_message(model_name, alias))
    if pinned:
        alias = ""  # served by number: no alias to name, now or later
    uri = tracking.tracking_uri()
    # By version: every worker (and one uvicorn restarts) serves the version announced,
    # even if the alias moves meanwhile.
    model_uri = f"models:/{model_name}/{version}"
    # An IPv6 address is written in brackets in a URL (http://[::1]:5123/).
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    announce = (f"serving {model_name}@{alias} (version {version}) on " if alias else
                f"serving {model_name} version {version} on ") + \
        f"http://{netloc}/invocations; Ctrl+C stops" + (
            # Each worker loads the model before the port takes connections (seconds).
            f" ({workers} workers starting: ready when /ping answers 200)"
            if workers > 1 else "")
    import secrets
    from urllib.parse import quote

    from shoprec.serving.engine import DIVERSITY_ENV, EXPLANATIONS_ENV, STOCK_ENV
    from shoprec.serving.server import MODEL_INFO_ENV, TOKEN_ENV
    from shoprec.serving.sessions import SESSIONS_ENV

    loopback = host in ("127.0.0.1", "localhost", "::1")
    # Stock MLflow's server checks neither the Host nor a token: its shopper data is off
    # unless asked for.
    shopper_data = "on" if explanations else "off" if explanations is False else \
        "loopback" if loopback and not mlflow_server else "off"
    explanations = shopper_data != "off"  # personal data stays on this machine unless allowed
    # On loopback, shopper data goes to those holding this token (the storefront link): a
    # proxy on this machine reaches the server from 127.0.0.1 with a loopback Host too.
    token = (os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)) \
        if shopper_data == "loopback" else ""
    if sessions and not mlflow_server:
        # Made (or checked) once here: a worker should not die on an unwritable folder.
        import sqlite3

        from shoprec.serving.sessions import SessionStore

        try:
            SessionStore(sessions)
        except (sqlite3.Error, ValueError) as exc:
            raise ConfigError(f"--sessions {sessions}: cannot use it ({exc}); give a writable "
                              "file, or --sessions '' to turn live sessions off") from None
    registered = tracking.client().get_model_version(model_name, version)
    # In seconds, as started_at: an app's date parser reads one form.
    when = datetime.fromtimestamp(registered.creation_timestamp / 1000, UTC).isoformat(
        timespec="seconds")
    environment = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
                   DIVERSITY_ENV: str(diversity), EXPLANATIONS_ENV: "1" if explanations else "0",
                   STOCK_ENV: held,
                   # Stock MLflow has no POST /events: no sessions to look up there.
                   SESSIONS_ENV: str(Path(sessions).resolve())
                   if sessions and not mlflow_server else "",
                   # The data's end beside the registration: a champion kept night after
                   # night by the gate serves data older than its registration says.
                   MODEL_INFO_ENV: json.dumps({"name": model_name, "alias": alias or None,
                                               "version": str(version), "registered_at": when,
                                               # The alias is as it was then: a promotion
                                               # leaves this server on its version.
                                               "started_at": datetime.now(UTC).isoformat(
                                                   timespec="seconds"),
                                               "data_cutoff": (registered.tags or {}).get(
                                                   "data_cutoff") or None,
                                               "shopper_data": shopper_data}),
                   TOKEN_ENV: token}
    if mlflow_server:
        err_console.print(announce, highlight=False)
        sys.stderr.flush()
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                   "--env-manager", "local", "--host", host, "--port", str(port),
                   "--workers", str(workers)]
        # MLflow starts `uvicorn` from PATH: put this environment's scripts first, so the
        # server runs from the project's environment even when it is not activated.
        scripts = str(Path(sys.executable).parent)
        path = os.pathsep.join([scripts, os.environ.get("PATH", "")])
        # The model server replaces this process, so signals reach it directly.
        os.execve(sys.executable, command, {**os.environ, **environment, "PATH": path})
    import tempfile

    import uvicorn
    from mlflow.exceptions import MlflowException

    from shoprec.errors import ModelFilesError, ShopRecError
    from shoprec.registry.loading import download_model, local_bundle
    from shoprec.serving.protocol import DeadlineHttpProtocol
    from shoprec.serving.server import MODEL_URI_ENV, Limits, create_app

    with tempfile.TemporaryDirectory(prefix="shoprec-serve-") as staging:
        # One local copy of the version for every worker, one started again included: the
        # registry is asked once, here, and may be unreachable later.
        try:
            local = download_model(model_name, str(version), staging)
        except ModelFilesError:
            raise
        except (OSError, MlflowException) as exc:
            said = tracking.redact(str(exc))[:500]
            advice = ("free space there, or set TMPDIR to a folder with room"
                      if isinstance(exc, OSError) or "No space left" in said
                      else "check the artifact store and the tracking server")
            raise ShopRecError(f"could not copy version {version} into {staging} ({said}); "
                               f"{advice}") from exc
        # The workers (separate processes when --workers > 1) read these when they start.
        limits = Limits(max_body_bytes, max_records, max_query_chars, max_answer_items,
                        request_timeout)
        os.environ.update({**environment, MODEL_URI_ENV: local, **limits.environment()})
        if workers == 1:
            # Built here, so a version this shoprec cannot read, or whose pseudonym key is
            # not this server's, is said as such before anything is announced.
            application: Any = create_app()
        else:
            # Read once here: uvicorn starts a worker again each time one dies, so a model
            # that cannot be read would have the workers fail and restart for ever.
            checked = local_bundle(local)
            _ = checked.user_key
            del checked
            application = "shoprec.serving.server:create_app"
        # Again: loading took seconds, and another server may have taken the port meanwhile.
        _check_port_free(host, port)
        err_console.print(announce, highlight=False)
        # After '#': a browser never sends it, so no access log or proxy writes it down.
        link = f"http://{netloc}/" + (f"#token={quote(token, safe='')}" if token else "")
        err_console.print(f"storefront preview: {link}", highlight=False)
        if token:
            err_console.print("shopper data (the shopper list, histories, explanations) goes "
                              "only to requests carrying this token (the link, or the header "
                              "X-Shoprec-Token)", highlight=False)
        err_console.print(_erasure_list_line(), highlight=False)
        _set_erasure_floor()
        sys.stderr.flush()
        # A stop waits for requests in flight at most this long: a client that never
        # finishes its body must not hold the server past SIGTERM.
        uvicorn.run(application, factory=workers > 1, host=host, port=port,
                    workers=workers, log_level="info",
                    access_log=_VERBOSE, log_config=_uvicorn_logging(),
                    # Past this, uvicorn answers 503 at once: a peak is shed, not queued
                    # behind slow clients (1,500 half-sent bodies were all held open).
                    # uvicorn counts the request's own connection: N lets N through.
                    limit_concurrency=max_connections + 1,
                    # A request slow to arrive is cut at --request-timeout: 25 sockets
                    # sending a header line every 5 s held every connection.
                    http=DeadlineHttpProtocol,
                    timeout_graceful_shutdown=SERVE_GRACE_SECONDS)
    # Stopped, the staging folder removed: nothing is left to close (each session event
    # was committed when it came). The interpreter's own teardown of the model, pandas and
    # MLflow then took 3 s of garbage collection: a stop would outlast its grace period.
    global _SERVER_STOPPED
    _SERVER_STOPPED = True


def _erasure_list_line() -> str:
    """Which erasure list a server reads, and how many records it holds.

    A server started where the list is not (another folder, the variable unset) served
    erased shoppers' histories again without a word.
    """
    from shoprec.errors import ConfigError
    from shoprec.privacy import SUPPRESSIONS_ENV, SuppressionList

    listed = SuppressionList()
    where = listed.path.resolve()
    if not listed.path.exists():
        return (f"erasure list: {where} does not exist, so no shopper is erased here; if "
                f"`shoprec forget` wrote one elsewhere, set {SUPPRESSIONS_ENV} to it")
    try:
        count = len(listed.records())
    except ConfigError as exc:
        return f"erasure list: {exc} (every request is answered 503 until it is mended)"
    return f"erasure list: {where} ({count:,} record{'' if count == 1 else 's'})"


def _set_erasure_floor() -> None:
    """Hand the workers the erasure list's size now.

    A worker started again after a crash has read no list before, and would take a
    shrunken one as it finds it.
    """
    from shoprec.errors import ConfigError
    from shoprec.privacy import SUPPRESSIONS_FLOOR_ENV, SuppressionList

    try:
        os.environ[SUPPRESSIONS_FLOOR_ENV] = str(len(SuppressionList().subjects()))
    except ConfigError:  # a damaged list: every request is refused until it is mended
        os.environ.pop(SUPPRESSIONS_FLOOR_ENV, None)


def _uvicorn_logging() -> dict[str, Any]:
    """The server's logging in shoprec's format: a time on every line, all on stderr.

    uvicorn's own wrote requests to stdout and its other lines to stderr, neither with a
    time: a service's log (journald, cron's files) could not say when a request came.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"].update(
        fmt="%(asctime)s %(levelname)s %(name)s: %(message)s", use_colors=False)
    config["formatters"]["access"].update(
        fmt='%(asctime)s %(levelname)s %(name)s: %(client_addr)s - "%(request_line)s" '
            "%(status_code)s", use_colors=False)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    # uvicorn's own lines at INFO, but without -v only its warnings and a worker's death
    # (an OOM kill was invisible): the filter decides, not the level.
    config["filters"] = {"quiet": {"()": "shoprec.serving.server.QuietServerLog",
                                   "verbose": _VERBOSE}}
    config["handlers"]["default"]["filters"] = ["quiet"]
    config["filters"]["no_query"] = {"()": "shoprec.serving.server.AccessLogWithoutQuery"}
    config["handlers"]["access"]["filters"] = ["no_query"]
    # The workers' own processes get this configuration alone: shoprec's records (a
    # request that failed) went out bare, without time or level.
    config["loggers"]["shoprec"] = {"handlers": ["default"], "propagate": False,
                                    "level": "DEBUG" if _VERBOSITY > 1 else
                                    "INFO" if _VERBOSE else "WARNING"}
    return config


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before anything is announced or loaded.

    uvicorn would print its own ``[Errno 98]`` after the "serving" lines and exit 3.

    Raises:
        ConfigError: The address is in use, or ``host`` is not this machine's.
    """
    import errno
    import socket

    if not host.strip():
        # The socket layer reads "" as every interface: an unset $HOST would publish it.
        raise ConfigError("--host is empty; give an address (127.0.0.1, or 0.0.0.0 for every "
                          "interface)")
    # The family uvicorn binds with: IPv6 for an address with ":", else IPv4 (localhost too).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise ConfigError(f"--host {host}: not an address of this machine ({exc})"
                              ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port} is in use on {host} (another server, or "
                                  "this one still running); pick another --port or stop "
                                  "it") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); check "
                              "--host and --port") from None


#: How long `shoprec serve` lets requests in flight finish after SIGTERM or Ctrl-C.
SERVE_GRACE_SECONDS = 10
#: Set when `shoprec serve`'s server has stopped: the console script then exits at once.
_SERVER_STOPPED = False


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop a command like Ctrl-C does.

    SIGTERM is what a process manager or a work-pool worker sends to stop a run: the flow
    unwinds and its MLflow run is marked killed.
    """
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _exit_now(code: int) -> None:
    """Exit now, after stopping Prefect's temporary server.

    Training threads that are still running are not waited for: a stopped run must end
    within seconds.
    """
    _flush_stdio()
    try:
        from shoprec_flows.shutdown import stop_temporary_servers

        stop_temporary_servers()
    finally:
        _flush_stdio()
        os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written
            pass


def _finish_now(code: int = 0) -> None:
    """End a command that imported Prefect: send Prefect's last records, then exit at once.

    The interpreter's own exit after a training run took 2.5 s more (tearing down
    TensorFlow, MLflow and Prefect's threads; benchmarks/RESULTS.md), and after a failed
    or refused command it printed pages of tracebacks from Prefect's server services
    stopping under it. Everything the commands write is closed by then; what Prefect still
    holds (flow logs, events) is sent first, and the logging handlers flushed.

    Args:
        code: The command's exit status.
    """
    from shoprec_flows.shutdown import DRAIN_SECONDS, drain_prefect

    try:
        if not drain_prefect():
            err_console.print(f"warning: Prefect's last logs or events were not all sent "
                              f"within {DRAIN_SECONDS:.0f} s")
        logging.shutdown()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while draining: stopped, not a success
        code = 130
    finally:
        _exit_now(code)


def main() -> None:
    """Entry point of the console script."""
    from shoprec.runtime import apply_runtime_defaults

    apply_runtime_defaults()
    _stop_on_sigterm()
    repeated = _repeated_file_option(sys.argv[1:])
    if repeated:
        err_console.print(f"error: {repeated}", highlight=False)
        sys.exit(EXIT_USAGE)
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == 130:  # interrupted: threads may still be training
            _exit_now(130)
        if _SERVER_STOPPED and not exit_.code:
            _flush_stdio()
            os._exit(EXIT_OK)
        if "prefect" in sys.modules and (exit_.code is None or isinstance(exit_.code, int)):
            _finish_now(exit_.code or 0)
        raise
    except Exception as exc:  # noqa: BLE001 - a bug, not a user mistake: say so, exit 3
        if stopped_by_signal(exc):
            # A fault while unwinding from Ctrl-C or SIGTERM (Prefect reporting the stop to
            # a server that the same signal ended): the command was stopped, as asked.
            err_console.print("interrupted")
            _exit_now(130)
        _report_failure(exc)
        if "prefect" in sys.modules:
            _finish_now(EXIT_FAILURE)
        sys.exit(EXIT_FAILURE)



def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it came from (``__cause__``, else ``__context__``), once each."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        yield found
        found = found.__cause__ or found.__context__


def _resource_fault(exc: BaseException) -> str | None:
    """What ran out, when ``exc`` (or an error it came from) says a resource did."""
    from shoprec.errors import EXHAUSTED_RESOURCES

    for found in _causes(exc):
        if isinstance(found, MemoryError):
            return ("memory ran out: train fewer candidates at once (--network-slots 1, or "
                    "fewer --models), use less data, or a machine with more memory")
        if isinstance(found, OSError) and found.errno in EXHAUSTED_RESOURCES:
            where = f" ({found.filename})" if found.filename else ""
            return f"{EXHAUSTED_RESOURCES[found.errno]}{where}: {found.strerror}"
        if "database or disk is full" in str(found):  # SQLite's, through MLflow
            return f"the disk is full: {str(found)[:300]}"
    return None


def _unwritable_path(exc: BaseException) -> str | None:
    """A path the machine refused (not a folder, no permission), when ``exc`` names one.

    An artifact store made a file, or a folder this account may not write, read
    "internal error: NotADirectoryError ... report it".
    """
    import errno

    for found in _causes(exc):
        if isinstance(found, OSError) and found.filename and found.errno in (
                errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM):
            return f"{found.strerror}: {found.filename}"
    return None


def _service_fault(exc: BaseException) -> str | None:
    """Which service configured by the user did not answer, when ``exc`` says one did."""
    for found in _causes(exc):
        text = str(found)
        if "Failed to reach API at" in text or type(found).__name__ in (
                "ConnectError", "ConnectTimeout") and "httpx" in type(found).__module__:
            import os

            url = os.environ.get("PREFECT_API_URL", "")
            return (f"the Prefect server at PREFECT_API_URL={url or '(its profile setting)'} "
                    f"does not answer ({text[:200]}); start it (`prefect server start`), or "
                    "unset PREFECT_API_URL to run on a temporary server of this command")
        if "Timed out trying to connect to" in text:
            return (f"no Dask scheduler answers ({text[:200]}); check --dask-address, or "
                    "start the scheduler (`dask scheduler`)")
        if "database is locked" in text:
            from shoprec.registry import tracking

            # SQLite's lock outlasted every retry: another process holds the store.
            return (f"the MLflow store {tracking.display_uri()} is locked by another "
                    "process (a run, an `mlflow ui`, a tool holding a write transaction); "
                    "nothing was registered unless the output above says so: run again "
                    "when it is free")
    return None


def _report_failure(exc: Exception) -> None:
    """Say what ended the command with exit 3: a resource, the registry, or a bug."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        traceback.print_exc()
    if (resource := _resource_fault(exc)) is not None:
        # Not a bug to report: the machine's limits, said plainly.
        err_console.print(_styled(("error:", "bold red"), f" {resource}; nothing was "
                                  "registered unless the output above says so"),
                          highlight=False)
        return
    if (service := _service_fault(exc)) is not None:
        err_console.print(_styled(("error:", "bold red"), f" {service}"), highlight=False)
        return
    if (path := _unwritable_path(exc)) is not None:
        err_console.print(_styled(("error:", "bold red"), f" {path}; check that its folders "
                                  "exist and this account may use them (an artifact store, "
                                  "an output folder, SHOPREC_SUPPRESSIONS...)"),
                          highlight=False)
        return
    if type(exc).__module__.startswith(("mlflow", "sqlalchemy")):
        # A fault of the tracking server or store (gone, damaged), not a shoprec bug. Its
        # first line says it; the SQL statement and parameters after it say nothing more.
        from shoprec.registry import tracking

        first = tracking.redact(str(exc)).strip().split("\n[SQL:")[0].splitlines()
        err_console.print(_styled(("MLflow error:", "bold red"),
                                  f" {(first[0] if first else type(exc).__name__)[:600]}"
                                  f"\n(tracking URI {tracking.display_uri()}); nothing was "
                                  "registered unless the output above says so: check that "
                                  "the store answers, then run again"), highlight=False)
        return
    err_console.print(_styled(("internal error:", "bold red"),
                              f" {type(exc).__name__}: {exc}\nrun again with -v for "
                              "details and report it with the command used"),
                      highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
