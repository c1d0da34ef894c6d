from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from app.common import Strict
from app.domain.plans import MAX_TIMEOUT_S, STEP_NAMES
from app.domain.states import ClusterState

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Region = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
# The steps of the default plan (app.domain.plans.DEFAULT_STEPS), as an enum of names.
StepName = StrEnum("StepName", {name: name for name in STEP_NAMES})  # type: ignore[misc]
Count = Annotated[int, Field(ge=0, le=1000)]
# A gate holds a step's action ("step") or its undo ("step:undo") until it is opened.
GateName = Annotated[str, StringConstraints(pattern="^(" + "|".join(STEP_NAMES) + ")(:undo)?$")]


class Site(Strict):
    name: Name
    region: Region
    cloud: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class SimulatedDriver(Strict):
    """The embedded driver: latency and failure injection, per pair."""

    kind: Literal["simulated"] = "simulated"
    step_delay_ms: int = Field(default=0, ge=0, le=600_000)
    # step -> how many of that step's first attempts fail for good (each needs a retry).
    fail: dict[StepName, Count] = Field(default_factory=dict)
    # step -> how many of that step's first calls fail transiently (retried in the step).
    fail_transient: dict[StepName, Count] = Field(default_factory=dict)
    # step -> how many of that step's first undo attempts fail.
    fail_undo: dict[StepName, Count] = Field(default_factory=dict)
    # step -> its deadline in seconds (default: 300, or twice step_delay_ms if longer).
    timeout_s: dict[StepName, Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)]] = Field(
        default_factory=dict
    )
    # Steps ("step" or "step:undo") that answer "not yet" until their gate is opened.
    gate: list[GateName] = Field(default_factory=list, max_length=14)
    # Steps that apply their effect, then wait inside the call until their gate is opened.
    hold: list[GateName] = Field(default_factory=list, max_length=14)


class Deployment(Strict):
    name: Name


class ClusterCreate(Strict):
    name: Name
    primary: Site
    secondary: Site
    driver: SimulatedDriver = Field(default_factory=SimulatedDriver)
    deployments: list[Deployment] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _two_regions(self) -> ClusterCreate:
        if self.primary.region == self.secondary.region:
            raise ValueError("primary and secondary must be in different regions")
        return self


class ClusterPatch(Strict):
    """Settings that may change; the sites of a pair are fixed once registered."""

    name: Name | None = None
    driver: SimulatedDriver | None = None
    deployments: list[Deployment] | None = Field(default=None, max_length=500)


class ClusterOut(Strict):
    id: str
    name: str
    primary: Site
    secondary: Site
    driver: SimulatedDriver
    deployments: list[Deployment]
    state: ClusterState
    active_region: str
    version: int
    last_operation_id: str | None
    needs_attention: bool
    allowed_actions: list[str]
    created_at: datetime
    updated_at: datetime
