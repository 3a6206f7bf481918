"""A run's parameter groups over the deployment's own values for them.

Prefect merges a run's parameters with its deployment's by name only: a run started with
``--params '{"training": {"models": ["ease"]}}'`` (the CLI, ``run_deployment``, an
automation) replaced the whole ``training`` group, so the deployment's registered model
name, experiment and folders fell back to the defaults, and one shop's work was
registered under another's name. The form of the UI sends whole groups, which this keeps
as they are.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: The fields that say whose work a run is: the shop's registered model and experiment.
WHERE = ("registered_model_name", "experiment")


def overlay(saved: Any, given: M, name: str) -> M:
    """``given``'s fields that the run set, over the deployment's ``saved`` group.

    Args:
        saved: The deployment's value of the parameter (a dict), or anything else when it
            has none (``given`` is then kept as it is).
        given: The run's value, as Prefect validated it (its set fields are what the run
            gave).
        name: The parameter's name, for the log.

    Returns:
        The merged group, validated again.
    """
    if not isinstance(saved, dict) or not saved:
        return given
    ran = given.model_dump(mode="json", exclude_unset=True)
    kept: list[str] = []
    merged = _merged(saved, ran, kept, "")
    # Whose work it is: a run naming another shop's model than its deployment is said (a
    # config object given to run_deployment sends every field, defaults included).
    for field in WHERE:
        if field in saved and field in ran and ran[field] != saved[field]:
            logger.warning("parameter %s: the run sets %s to %r where the deployment has %r: "
                           "another shop's? A config object given to run_deployment sends "
                           "every field: pass a dict of the fields to change, or "
                           "model_dump(exclude_unset=True)", name, field, ran[field],
                           saved[field])
    if not kept:
        return given
    logger.info("parameter %s: the run gave %s; the deployment's values kept: %s", name,
                ", ".join(sorted(ran)) or "nothing", ", ".join(kept))
    return type(given).model_validate(merged)


def _merged(saved: dict[str, Any], ran: dict[str, Any], kept: list[str],
            path: str) -> dict[str, Any]:
    """``ran`` over ``saved``, nested mappings merged key by key (``training.params.mf``).

    ``kept`` gets the dotted names of the deployment's values the run did not give.
    """
    out = dict(saved)
    kept += [f"{path}{key}" for key in saved if key not in ran]
    for key, value in ran.items():
        before = saved.get(key)
        out[key] = _merged(before, value, kept, f"{path}{key}.") \
            if isinstance(value, dict) and isinstance(before, dict) else value
    return out


def deployment_values(deployment_id: str | None) -> dict[str, Any]:
    """The parameters saved with deployment ``deployment_id`` (``{}``: none, or no deployment).

    A server that cannot say leaves the run's own values (logged): the run goes on as
    Prefect started it.
    """
    if not deployment_id:
        return {}
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return dict(client.read_deployment(UUID(str(deployment_id))).parameters or {})
    except Exception as exc:  # noqa: BLE001 - the run's own values still stand
        logger.warning("the deployment's parameters could not be read (%s); the run's are "
                       "used as given", exc)
        return {}


def with_deployment_values(**groups: BaseModel) -> dict[str, Any]:
    """Each of ``groups`` (name -> the run's value) over the running deployment's own.

    Outside a deployment (a flow called directly, the CLI) every group is kept as given.
    """
    from prefect.context import FlowRunContext

    # Read from the run's own record (no call to the server for a run of no deployment).
    run = getattr(FlowRunContext.get(), "flow_run", None)
    saved = deployment_values(getattr(run, "deployment_id", None))
    return {name: overlay(saved.get(name), value, name) for name, value in groups.items()}
