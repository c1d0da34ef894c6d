from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from app.common import Strict

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Region = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
StepName = Literal[
    "preflight",
    "pause_schedulers",
    "drain_replication",
    "promote_target",
    "switch_traffic",
    "validate_deployments",
    "resume_schedulers",
]


class Site(Strict):
    name: Name
    region: Region
    cloud: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class SimulatedDriver(Strict):
    """The embedded driver: latency and failure injection, per pair."""

    kind: Literal["simulated"] = "simulated"
    step_delay_ms: int = Field(default=0, ge=0, le=600_000)
    # step name -> how many of that step's first attempts fail.
    fail: dict[StepName, Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=dict)


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


ClusterStateName = Literal["primary-active", "failing-over", "secondary-active", "failing-back"]


class ClusterOut(Strict):
    id: str
    name: str
    primary: Site
    secondary: Site
    driver: SimulatedDriver
    deployments: list[Deployment]
    state: ClusterStateName
    active_region: str
    version: int
    last_operation_id: str | None
    needs_attention: bool
    allowed_actions: list[str]
    created_at: datetime
    updated_at: datetime
