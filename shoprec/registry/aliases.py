"""Registry aliases: reading them fail-closed, moving ``champion``, and the move log.

``champion`` serves; ``challenger`` is the latest trained version; ``previous-champion`` is
the version ``champion`` pointed at before the last promotion, so a rollback has somewhere
to go. Every move is written to the registered model's tags (``alias_move.<time>.<alias>``:
a JSON record of alias, from, to, action, who, when, why).
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime
from typing import Any

from shoprec.errors import RegistryError
from shoprec.registry import tracking

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous-champion"


def alias_version(name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, or ``None`` if the alias is not set.

    Only a registered model that does not exist, or one without that alias, means "not
    set". Any other failure (a server that is down, a locked store, a permission error)
    raises: a promotion decision must never mistake an unreadable registry for an empty
    one.

    Raises:
        RegistryError: The registry could not be read.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = tracking.client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"could not read {name!r} from the MLflow registry at "
                            f"{tracking.display_uri()}: {tracking.redact(exc.message)}") from exc
    except Exception as exc:  # any client failure is a registry fault
        why = tracking.redact(f"{type(exc).__name__}: {exc}")
        raise RegistryError(f"could not read {name!r} from the MLflow registry at "
                            f"{tracking.display_uri()}: {why}") from exc
    version = (model.aliases or {}).get(alias)
    return None if version is None else str(version)


#: How many times an alias is set when another writer keeps creating it at the same moment.
ALIAS_ATTEMPTS = 3

#: What the registry's stores say when two writers create one alias at once (PostgreSQL,
#: MySQL, SQLite): MLflow sets an alias by reading, then inserting when it read nothing.
_ALIAS_CONFLICT = ("UniqueViolation", "Duplicate entry", "UNIQUE constraint failed",
                   "registered_model_alias_pk")


def set_alias(client: Any, name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``, whoever else sets that alias at the same time.

    MLflow reads the alias, then inserts it if it read nothing; two writers doing so at
    once (two trainings publishing together, the first time ``previous-champion`` or
    ``challenger`` is set) make one of them fail on the table's key. The other writer has
    by then created the row, so setting it again updates it: the last writer wins, as
    it would one after the other. Any other failure (a server gone) raises at once.
    """
    for attempt in range(ALIAS_ATTEMPTS):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except Exception as exc:
            if attempt + 1 == ALIAS_ATTEMPTS or not any(
                    sign in str(exc) for sign in _ALIAS_CONFLICT):
                raise
            logger.info("%s: alias %s was being created by another writer; setting it again",
                        name, alias)


#: The longest text of a record's field (a registered model's tag holds 5,000 characters).
_RECORD_TEXT = 1500
#: The longest tag value every MLflow backend keeps: PostgreSQL's and MySQL's columns are
#: varchar(5000), in characters (SQLite does not check).
TAG_LIMIT = 5000


def record_text(record: dict[str, Any], limit: int = TAG_LIMIT) -> str:
    """``record`` as JSON of at most ``limit`` characters, its long texts cut to fit.

    Kept in ASCII (any database's character set stores it), so a non-ASCII letter counts
    as its escape. Only texts are cut: the copies of the reason (the version's tags, the
    description line, a decision) first, the reason itself last; what identifies the
    operation (its versions, time and process) never.

    Raises:
        ValueError: Too many fields to fit, however short their texts.
    """
    record = json.loads(json.dumps(record, default=str))
    text = json.dumps(record)
    for last in (False, True):
        for holder, key in _cuttable(record, last):
            if len(text) <= limit:
                return text
            holder[key] = _cut_to_fit(record, holder, key, limit)
            text = json.dumps(record)
    if len(text) > limit:
        raise ValueError(f"a registry record of {len(text)} characters cannot be cut to "
                         f"{limit}")
    return text


#: What identifies an operation in its record: never cut.
_KEPT = frozenset({"owner", "at", "taken_at", "version", "from", "to", "previous", "action",
                   "alias"})
#: Cut only once every other text is: what the person gave as the operation's reason.
_CUT_LAST = frozenset({"reason", "by"})


def _cuttable(record: dict[str, Any], last: bool) -> list[tuple[dict[str, Any], str]]:
    """The (container, key) of each text of ``record`` that may be cut, longest first.

    ``last``: the reason and the person, else every other text (nested ones included).
    """
    found: list[tuple[dict[str, Any], str]] = []
    for key, value in record.items():
        if key in _KEPT or (key in _CUT_LAST) != last:
            continue
        if isinstance(value, str):
            found.append((record, key))
        elif isinstance(value, dict):
            found += [(value, inner) for inner, text in value.items() if isinstance(text, str)]
    return sorted(found, key=lambda place: -len(place[0][place[1]]))


def _cut_to_fit(record: dict[str, Any], holder: dict[str, Any], key: str, limit: int) -> str:
    """The longest start of ``holder[key]`` (marked ``…``) that lets ``record`` fit."""
    value = holder[key]
    low, high = 0, len(value)
    while low < high:  # the longest prefix whose record fits, by its escaped length
        middle = (low + high + 1) // 2
        holder[key] = value[:middle] + "…"
        if len(json.dumps(record)) <= limit:
            low = middle
        else:
            high = middle - 1
    return value[:low] + "…" if low < len(value) else value


def now() -> str:
    """The current UTC time, ISO 8601 to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def actor() -> str:
    """The operating-system user, or ``unknown``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def log_alias_move(name: str, alias: str, before: str | None, after: str | None,
                   action: str, by: str, reason: str, at: str, **extra: Any) -> None:
    """Record one alias move in the registered model's tags."""
    # Each text cut, not the JSON: a cut JSON text is no record (alias_log reads them all).
    record = {"alias": alias, "from": before, "to": after, "action": action,
              "by": by[:_RECORD_TEXT], "at": at, "reason": reason[:_RECORD_TEXT],
              **{k: v[:_RECORD_TEXT] if isinstance(v, str) else v for k, v in extra.items()}}
    # Tag keys must be unique and sortable, in MLflow's key alphabet: the UTC time of this
    # call (to the microsecond; registry calls take far longer) keeps the log in order
    # even for the two moves of one operation, which share ``at``.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tracking.client().set_registered_model_tag(name, f"alias_move.{stamp}.{alias}",
                                               record_text(record))
    logger.info("%s: alias %s moved %s -> %s (%s by %s)", name, alias, before, after, action,
                by)


#: Registered-model tag holding a champion move under way (:func:`move_champion`): written
#: before the first alias moves, removed once every step is done.
PENDING_MOVE = "champion_move_pending"
#: Registered-model tag holding a rollback under way
#: (:func:`shoprec.registry.promotion.rollback`): ``{"from", "to", "by", "at", "reason",
#: "owner"}``, written before champion moves and removed once every step is done.
PENDING_ROLLBACK = "rollback_pending"
#: How old the record of a move made on another machine must be to count as abandoned
#: (its process cannot be looked up from here); a move takes seconds.
ABANDONED_AFTER_SECONDS = 600


def move_champion(name: str, version: str, outgoing: str | None, action: str, by: str,
                  reason: str, at: str, version_tags: dict[str, str] | None = None,
                  description: str = "", **extra: Any) -> None:
    """Point ``champion`` at ``version``; the outgoing champion becomes ``previous-champion``.

    Both moves are logged (:func:`log_alias_move`); then ``version_tags`` are set on the
    version and ``description`` is put first in its description. The move is recorded
    (:data:`PENDING_MOVE`) before anything changes and the record removed at the end, so
    one stopped midway (a server gone, a process killed) is finished or undone by the next
    operation on the model (:func:`finish_interrupted_move`).
    """
    client = tracking.client()
    finish_interrupted_move(name)
    # Another process moving champion right now (or stopped doing so moments ago on
    # another machine), by a promotion or a rollback: its record must not be overwritten,
    # nor its move crossed.
    refuse_while_busy(client, name)
    before = alias_version(name, PREVIOUS_CHAMPION)
    # previous-champion already on the outgoing version (a rollback stopped midway left it
    # so) is not moved, nor logged moving onto itself.
    moves_previous = outgoing is not None and outgoing not in (version, before)
    record = {"version": version, "from": outgoing, "previous": before, "action": action,
              "by": by, "at": at, "reason": reason[:_RECORD_TEXT],
              "version_tags": {k: v[:_RECORD_TEXT] for k, v in (version_tags or {}).items()},
              "description": description[:_RECORD_TEXT], "owner": operation_owner(),
              "extra": {k: str(v)[:_RECORD_TEXT] for k, v in extra.items()}}
    client.set_registered_model_tag(name, PENDING_MOVE, record_text(record))
    # A rollback that began between the check and the record: one of the two gives way.
    refuse_while_busy(client, name, own=PENDING_MOVE)
    if outgoing is not None and moves_previous:
        set_alias(client, name, PREVIOUS_CHAMPION, outgoing)
    try:
        set_alias(client, name, CHAMPION, version)
    except BaseException:  # a stop signal too: previous-champion must not be left moved
        # Champion did not move: put previous-champion back, so that a rollback does not
        # "restore" the champion that is still serving and lose the real previous one.
        # If that fails too, the record lets the next operation put it back.
        if moves_previous:
            if before is None:
                client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
            else:
                set_alias(client, name, PREVIOUS_CHAMPION, before)
        try:
            client.delete_registered_model_tag(name, PENDING_MOVE)
        except Exception as exc:  # noqa: BLE001 - the move's own error is the one to see
            logger.warning("%s: could not remove the record of the move that failed (%s); "
                           "the next operation drops it", name, tracking.redact(str(exc)))
        raise
    if moves_previous:
        log_alias_move(name, PREVIOUS_CHAMPION, before, outgoing, action, by, reason, at)
    log_alias_move(name, CHAMPION, outgoing, version, action, by, reason, at, **extra)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(name, version, key, value[:5000])
    describe(client, name, version, description)
    client.delete_registered_model_tag(name, PENDING_MOVE)


class ChampionBusyError(RegistryError):
    """Another live operation (a promotion, a rollback) is moving the champion now.

    Attributes:
        busy: That operation, in words (:func:`champion_busy`).
    """

    def __init__(self, name: str, busy: str) -> None:
        super().__init__(
            f"another operation is moving {name}'s champion right now ({busy}); try again "
            "when it has ended. A record left by a process on another machine counts as "
            f"under way for {ABANDONED_AFTER_SECONDS // 60} minutes; if no such process is "
            "running, delete that registered model tag in the MLflow UI")
        self.busy = busy


def champion_busy(client: Any, name: str) -> str | None:
    """The live operation moving ``name``'s champion now, in words, or ``None``.

    A promotion's or publication's record (:data:`PENDING_MOVE`) or a rollback's
    (:data:`PENDING_ROLLBACK`) whose process may still be running (:func:`_abandoned`).
    """
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for tag, what in ((PENDING_MOVE, None), (PENDING_ROLLBACK, "rollback")):
        try:
            record = json.loads(tags.get(tag) or "null")
        except ValueError:
            continue
        if isinstance(record, dict) and not _abandoned(record):
            return _in_words(record, what, tag)
    return None


def _in_words(record: dict[str, Any], what: str | None, tag: str) -> str:
    return (f"a {what or record.get('action', 'move')} by {record.get('by', '?')} begun at "
            f"{record.get('at', '?')}, recorded in the tag {tag}")


def refuse_while_busy(client: Any, name: str, own: str | None = None,
                      restore: str | None = None) -> None:
    """Refuse to move ``name``'s champion while another operation is moving it.

    Args:
        client: An MLflow client.
        name: The registered model.
        own: The record tag this operation has just written: on a conflict it is removed
            before refusing, so that two operations that began together both give way
            rather than cross.
        restore: The text that tag held before (a stopped operation's record this one
            took over), put back instead of removing the tag.

    Raises:
        ChampionBusyError: Another live operation is moving the champion.
    """
    if own is not None:
        tags = client.get_registered_model(name).tags
        try:
            mine = json.loads(tags.get(own) or "null")
        except ValueError:
            mine = None
        if not isinstance(mine, dict) or mine.get("owner") != operation_owner():
            # Another operation of the same kind wrote its record over this one's: it goes
            # on, this one gives way (its record is theirs now, and stays).
            raise ChampionBusyError(name, _in_words(mine, "rollback" if own ==
                                                    PENDING_ROLLBACK else None, own)
                                    if isinstance(mine, dict) else f"its record {own} changed")
        other = PENDING_ROLLBACK if own == PENDING_MOVE else PENDING_MOVE
        busy = champion_busy(client, name) if tags.get(other) else None
    else:
        busy = champion_busy(client, name)
    if busy is None:
        return
    if own is not None and restore is not None:
        client.set_registered_model_tag(name, own, restore)
    elif own is not None:
        client.delete_registered_model_tag(name, own)
    raise ChampionBusyError(name, busy)


def describe(client: Any, name: str, version: str, line: str) -> None:
    """Put ``line`` first in the version's description (what the Models tab shows first).

    Best effort, and once: the tags and the alias log are the record.
    """
    from mlflow.exceptions import MlflowException

    if not line:
        return
    try:
        before = client.get_model_version(name, version).description or ""
        if not before.startswith(line):
            client.update_model_version(name, version,
                                        description=f"{line}\n\n{before}".strip()[:5000])
    except (MlflowException, OSError) as exc:
        logger.warning("%s version %s: could not add %r to its description: %s", name,
                       version, line[:80], tracking.redact(str(exc)))


def _pending(client: Any, name: str) -> str | None:
    """The text of ``name``'s :data:`PENDING_MOVE` tag, or ``None`` (none, or no model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name).tags.get(PENDING_MOVE) or None
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def version_exists(client: Any, name: str, version: str) -> bool:
    """Whether ``name`` still has ``version`` (a person may have deleted it)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return True


def operation_owner() -> dict[str, Any]:
    """This process, as an operation's record names it (:func:`_abandoned` looks it up)."""
    import os

    from shoprec.registry.runs import process_space

    return {**process_space(), "pid": os.getpid()}


def _abandoned(record: dict[str, Any]) -> bool:
    """Whether the process that recorded a move can no longer finish it."""
    import os

    import psutil

    from shoprec.registry.runs import process_space

    owner = record.get("owner") or {}
    here = process_space()
    # A stopped operation taken over by another process is that process's since then.
    since = record.get("taken_at") or record.get("at")
    if owner and all(owner.get(key) == value for key, value in here.items()):
        if owner.get("pid") == os.getpid():
            return True  # this process stopped it (a fault it has reported): not under way
        # This machine, boot and PID namespace: ask the kernel.
        try:
            started = psutil.Process(int(owner["pid"])).create_time()
            return started > datetime.fromisoformat(str(since)).timestamp() + 1
        except (KeyError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
            return True
    try:
        age = (datetime.now(UTC) - datetime.fromisoformat(str(since))).total_seconds()
    except (KeyError, ValueError, TypeError):
        return True
    if age < -60:
        # Dated ahead of this clock: the other machine's clock is ahead. Counted from its
        # date, a clock 6 hours fast blocked every promotion for 6 hours and 10 minutes;
        # an operation lasts minutes, so the rule's span holds on either side of now.
        logger.warning("a champion move recorded by another machine is dated %.0f s ahead "
                       "of this machine's clock (%s): the two clocks differ", -age, since)
    return abs(age) > ABANDONED_AFTER_SECONDS


def finish_interrupted_move(name: str) -> dict[str, Any] | None:
    """Finish or undo a champion move that stopped midway, if one did.

    A move whose champion alias was set is finished: the alias log gets the moves it
    lacks, the version its tags and description line. One stopped after
    ``previous-champion`` moved but before ``champion`` did, whose own restore failed,
    is undone: ``previous-champion`` goes back where it was (a rollback would otherwise
    "restore" the serving version and lose the real previous one). A record overtaken by
    other moves is dropped. A move whose process may still be running is left to it.

    Returns:
        The record with ``outcome`` (``finished``, ``undone`` or ``dropped``), or ``None``
        when there was nothing to do.
    """
    client = tracking.client()
    text = _pending(client, name)
    if not text:
        return None
    try:
        record = json.loads(text)
        version, outgoing, before = record["version"], record["from"], record["previous"]
        how = (str(record["action"]), str(record["by"]), str(record["reason"]),
               str(record["at"]))
    except (ValueError, KeyError, TypeError):
        client.delete_registered_model_tag(name, PENDING_MOVE)  # unreadable: nothing to do
        return None
    if not _abandoned(record):
        return None
    champion = alias_version(name, CHAMPION)
    previous = alias_version(name, PREVIOUS_CHAMPION)
    outcome = "dropped"
    if champion == version:
        logged = {(m.get("alias"), m.get("to")) for m in alias_log(name)
                  if m.get("at") == record["at"]}
        if outgoing not in (None, version, before) and previous == outgoing \
                and (PREVIOUS_CHAMPION, outgoing) not in logged:
            log_alias_move(name, PREVIOUS_CHAMPION, before, outgoing, *how)
        if (CHAMPION, version) not in logged:
            log_alias_move(name, CHAMPION, outgoing, version, *how, **record.get("extra", {}))
        for key, value in (record.get("version_tags") or {}).items():
            client.set_model_version_tag(name, version, key, value)
        describe(client, name, version, record.get("description", ""))
        outcome = "finished"
    elif outgoing is not None and champion == outgoing and previous == outgoing \
            and before != outgoing:
        if before is None or not version_exists(client, name, before):  # deleted by hand since
            client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        else:
            set_alias(client, name, PREVIOUS_CHAMPION, before)
        outcome = "undone"
    client.delete_registered_model_tag(name, PENDING_MOVE)
    logger.warning("%s: a %s of version %s by %s at %s had stopped midway; %s", name,
                   record["action"], version, record["by"], record["at"],
                   {"finished": "finished it", "undone": "put previous-champion back to "
                    f"{before}", "dropped": "the aliases have moved since: nothing to do"
                    }[outcome])
    return {**record, "outcome": outcome}


def alias_log(name: str) -> list[dict[str, Any]]:
    """Every logged alias move of ``name``, oldest first.

    An entry that is not JSON (cut by an earlier release) is given as ``{"unreadable"}``
    with its text, rather than hiding every other move.
    """
    tags = tracking.client().get_registered_model(name).tags
    moves = []
    for key in sorted(tags):
        if key.startswith("alias_move."):
            try:
                moves.append(json.loads(tags[key]))
            except ValueError:
                moves.append({"unreadable": tags[key][:200], "tag": key})
    return moves
