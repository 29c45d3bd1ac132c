"""Notebook 09's exercise: deprecate a patch once no run needs the old path."""

from __future__ import annotations

import json

from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner
from orderflow.lessons.versioning import (
    PATCH,
    SHORT,
    DeliveryV1,
    DeliveryV2,
    Deployment,
    delivery_queue,
    pick_up,
    replay,
    start_deliveries,
    wait_until_packed,
)

EXERCISE = "09-deprecate-patch"


def patch_markers(history) -> list[bool]:
    """For each patch marker in ``history``: whether it was recorded as deprecated (the core keeps
    the flag in the marker's details, as JSON)."""
    found = []
    for event in history.events:
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        attrs = event.marker_recorded_event_attributes
        if "patch" not in attrs.marker_name:
            continue
        deprecated = False
        for key, payloads in attrs.details.items():
            for payload in payloads.payloads:
                try:
                    value = json.loads(payload.data)
                except ValueError:
                    continue
                if isinstance(value, dict) and "deprecated" in value:
                    deprecated = bool(value["deprecated"])
                elif key == "deprecated":
                    deprecated = bool(value)
        found.append(deprecated)
    return found


async def _deliveries(stack, version: type, prefix: str, before: type | None = None):
    """Deliveries started on ``before`` (if given) and finished on ``version``: their histories."""
    queue = delivery_queue()
    first = await Deployment.start(stack.client, queue, before or version)
    handles = await start_deliveries(stack.client, queue, prefix, n=1)
    await wait_until_packed(handles)
    if before is not None:
        await first.stop()
        first = await Deployment.start(stack.client, queue, version)
    try:
        await pick_up(handles)
        return [await h.fetch_history() for h in handles]
    finally:
        await first.stop()


@exercise(EXERCISE, title="Deprecate the patch, safely", notebook="09")
async def check_deprecate_patch(stack, ns: dict) -> Verdict:
    v3 = learner(ns, "DeliveryV3", "the class with the patch deprecated")
    (recorded,) = await _deliveries(stack, DeliveryV2, "v2")  # a delivery insured by version 2: marker and all
    failure = await replay(recorded, v3)
    if failure is not None:
        raise Wrong(
            f"nondeterminism: {failure}. A delivery recorded on version 2 (pack, insure, ship, with the "
            f"'{PATCH}' marker) cannot be replayed on your class: keep pack, insure, ship in that order, "
            "with workflow.deprecate_patch(PATCH) where the patch was."
        )
    (new,) = await _deliveries(stack, v3, "v3")
    ran = [SHORT.get(a, a) for a in harness.scheduled_activities(new)]
    markers = patch_markers(new)
    if ran != ["pack", "insure", "ship"]:
        raise Wrong(f"a new delivery on your class ran {', '.join(ran)}: it must pack, insure and ship.")
    if markers and not any(markers):
        raise NotDone(
            "your class still calls workflow.patched: a new delivery recorded a live patch marker. Replace the "
            "`if workflow.patched(PATCH):` with `workflow.deprecate_patch(PATCH)` and insure every delivery."
        )
    if not markers:
        raise Wrong(
            "a new delivery recorded no patch marker: the patch was removed, not deprecated. Workers still running "
            "version 2 replay histories with this run's tasks; deprecate first (workflow.deprecate_patch(PATCH)), "
            "remove it in a later deploy."
        )
    (old,) = await _deliveries(stack, DeliveryV2, "v1", before=DeliveryV1)
    too_early = await replay(old, v3)
    warning = f" Deployed while a delivery from version 1 still ran, it would fail: {too_early}." if too_early else ""
    return Verdict(
        "passed",
        "Temporal replayed a delivery recorded on version 2 against your class without a nondeterminism error, "
        f"and a new delivery packed, insured and shipped with a deprecated patch marker.{warning}",
    )
