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
    record = {"alias": alias, "from": before, "to": after, "action": action, "by": by,
              "at": at, "reason": reason, **extra}
    # Tag keys must be unique and sortable, in MLflow's key alphabet: the UTC time of this
    # call (to the microsecond; registry calls take far longer) keeps the log in order
    # even for the two moves of one operation, which share ``at``.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tracking.client().set_registered_model_tag(name, f"alias_move.{stamp}.{alias}",
                                               json.dumps(record)[:5000])
    logger.info("%s: alias %s moved %s -> %s (%s by %s)", name, alias, before, after, action,
                by)


def move_champion(name: str, version: str, outgoing: str | None, action: str, by: str,
                  reason: str, at: str, **extra: Any) -> None:
    """Point ``champion`` at ``version``; the outgoing champion becomes ``previous-champion``.

    Both moves are logged (:func:`log_alias_move`).
    """
    client = tracking.client()
    before = alias_version(name, PREVIOUS_CHAMPION)
    moves_previous = outgoing is not None and outgoing != version
    if outgoing is not None and moves_previous:
        set_alias(client, name, PREVIOUS_CHAMPION, outgoing)
    try:
        set_alias(client, name, CHAMPION, version)
    except BaseException:  # a stop signal too: previous-champion must not be left moved
        # Champion did not move: put previous-champion back, so that a rollback does not
        # "restore" the champion that is still serving and lose the real previous one.
        if moves_previous:
            if before is None:
                client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
            else:
                set_alias(client, name, PREVIOUS_CHAMPION, before)
        raise
    if moves_previous:
        log_alias_move(name, PREVIOUS_CHAMPION, before, outgoing, action, by, reason, at)
    log_alias_move(name, CHAMPION, outgoing, version, action, by, reason, at, **extra)


def alias_log(name: str) -> list[dict[str, Any]]:
    """Every logged alias move of ``name``, oldest first."""
    tags = tracking.client().get_registered_model(name).tags
    return [json.loads(tags[key]) for key in sorted(tags) if key.startswith("alias_move.")]
