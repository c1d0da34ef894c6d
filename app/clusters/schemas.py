from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypeAliasType

from app.actions import registry as actions
from app.actions import templating
from app.common import JSON_NUMBER, Strict
from app.domain.plans import MAX_TIMEOUT_S, STEP_NAMES
from app.domain.states import ALLOWED_ACTIONS, ClusterState

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Region = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
# The steps of the default plan (app.domain.plans.DEFAULT_STEPS), as an enum of names.
StepName = StrEnum("StepName", {name: name for name in STEP_NAMES})  # type: ignore[misc]
Count = Annotated[int, Field(ge=0, le=1000), JSON_NUMBER]
# A gate holds a step's action ("step") or its undo ("step:undo") until it is opened.
GateName = Annotated[str, StringConstraints(pattern="^(" + "|".join(STEP_NAMES) + ")(:undo)?$")]


class Site(Strict):
    name: Name
    region: Region
    cloud: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class SimulatedDriver(Strict):
    """The embedded driver: latency and failure injection, per pair."""

    kind: Literal["simulated"] = "simulated"
    step_delay_ms: Annotated[int, Field(ge=0, le=600_000), JSON_NUMBER] = 0
    # step -> how many of that step's first attempts fail for good (each needs a retry).
    fail: dict[StepName, Count] = Field(default_factory=dict)
    # step -> how many of that step's first calls fail transiently (retried in the step).
    fail_transient: dict[StepName, Count] = Field(default_factory=dict)
    # step -> how many of that step's first undo attempts fail.
    fail_undo: dict[StepName, Count] = Field(default_factory=dict)
    # step -> its deadline in seconds (default: 300, or twice step_delay_ms if longer).
    timeout_s: dict[StepName, Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S), JSON_NUMBER]] = Field(
        default_factory=dict
    )
    # Steps ("step" or "step:undo") that answer "not yet" until their gate is opened.
    gate: list[GateName] = Field(default_factory=list, max_length=14)
    # Steps that apply their effect, then wait inside the call until their gate is opened.
    hold: list[GateName] = Field(default_factory=list, max_length=14)


StepId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
HealthUrl = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
# One action's settings (its `kind` and what that kind takes: DESIGN.md section 8).
ActionSettings = TypeAliasType("ActionSettings", dict[str, Any])
UrlPerRegion = TypeAliasType("UrlPerRegion", dict[Region, HealthUrl])
# The JSON the health endpoint's body must contain.
ExpectedJson = TypeAliasType("ExpectedJson", dict[str, Any])
# `{"secret": "<name>"}`: a secret of the pair, resolved when used.
SecretReference = TypeAliasType("SecretReference", dict[str, str])
# What an operator may ask for in a state (app.domain.states.ALLOWED_ACTIONS).
PairAction = StrEnum(  # type: ignore[misc]
    "PairAction", {a: a for a in sorted({a for acts in ALLOWED_ACTIONS.values() for a in acts})}
)


class StepSpec(Strict):
    """One step of a pair's own plan (DESIGN.md section 8)."""

    name: StepId
    action: ActionSettings | None = None
    parallel: list[ActionSettings] | None = Field(default=None, min_length=1, max_length=20)
    undo: ActionSettings | None = None
    point_of_no_return: StrictBool = False
    skip_when_forced: StrictBool = False
    traffic_switched: StrictBool = False
    # What the step runs in a drill (DESIGN.md section 14), instead of `action`.
    drill: ActionSettings | None = None
    timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S), JSON_NUMBER] | None = None
    retries: Annotated[int, Field(ge=0, le=20), JSON_NUMBER] | None = None

    def actions(self) -> list[ActionSettings]:
        return list(self.parallel) if self.parallel else [self.action or {}]


def _step_problems(step: StepSpec) -> list[str]:
    if (step.action is None) == (step.parallel is None):
        return ["a step has one `action` or a `parallel` list"]
    found = []
    if step.parallel and any(a.get("kind") == "approval" for a in step.parallel):
        found.append("an approval waits for a person: it cannot be part of `parallel`")
    for settings in [
        *step.actions(),
        *([step.undo] if step.undo else []),
        *([step.drill] if step.drill else []),
    ]:
        found.extend(actions.settings_problems(settings))
    return found


def _steps_problems(steps: list[StepSpec], which: str, *, needs_point: bool) -> None:
    names = [step.name for step in steps]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{which}: step {name!r} appears twice")
    for step in steps:
        found = _step_problems(step)
        if found:
            raise ValueError(f"{which}: step {step.name!r}: {found[0]}")
    points = [step.name for step in steps if step.point_of_no_return]
    if needs_point and len(points) != 1:
        where = f" (steps {', '.join(repr(p) for p in points)})" if points else ""
        raise ValueError(
            f"{which}: exactly one step has point_of_no_return: true, not {len(points)}{where}"
        )
    if not needs_point and points:
        raise ValueError(f"{which}: step {points[0]!r}: cleanup has no point of no return")
    switched = [step.name for step in steps if step.traffic_switched]
    if len(switched) > 1:
        raise ValueError(f"{which}: step {switched[1]!r}: only one step has traffic_switched")
    for step in steps:
        if step.point_of_no_return or not needs_point:
            break
        if step.undo is None and not all(actions.changes_nothing(a) for a in step.actions()):
            raise ValueError(
                f"{which}: step {step.name!r} comes before the point of no return and "
                "changes something: give it an `undo`"
            )


class Plan(Strict):
    """A pair's own plan: `steps` (failback runs them with source and target swapped unless
    `failback_steps` is given) and `cleanup` (run at the end of a drill)."""

    steps: list[StepSpec] = Field(min_length=1, max_length=50)
    failback_steps: list[StepSpec] | None = Field(default=None, min_length=1, max_length=50)
    cleanup: list[StepSpec] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _rules(self) -> Plan:
        _steps_problems(self.steps, "steps", needs_point=True)
        if self.failback_steps is not None:
            _steps_problems(self.failback_steps, "failback_steps", needs_point=True)
        if self.cleanup is not None:
            _steps_problems(self.cleanup, "cleanup", needs_point=False)
        return self

    def secret_names(self) -> set[str]:
        return templating.secret_names(self.model_dump(mode="json"))


class DeploymentHealth(Strict):
    """One GET in the target region: a URL template (`{region}`, `{name}` and the pair's
    placeholders) or a URL per region; healthy on 2xx with a JSON body containing `expect`."""

    url: HealthUrl | UrlPerRegion
    expect: ExpectedJson | None = None


class Deployment(Strict):
    """Something that runs on the pair (DESIGN.md section 11), validated after a switch."""

    # What _rules checks of the airflow fields, said in the document too.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "airflow"}}, "required": ["kind"]},
            "then": {
                "required": ["api_url", "username", "password"],
                "properties": {
                    "api_url": {"type": "object", "minProperties": 1},
                    "username": {"type": "string"},
                    "password": {"minLength": 1, "minProperties": 1, "type": ["string", "object"]},
                },
            },
            "else": {
                "properties": {
                    "api_url": {"maxProperties": 0, "type": ["null", "object"]},
                    "username": {"type": "null"},
                    "password": {"maxLength": 0, "maxProperties": 0},
                },
            },
        }
    )

    name: Name
    # An unhealthy critical deployment fails `validate_deployments`; others are warnings.
    critical: StrictBool = False
    health: DeploymentHealth | None = None
    # An `http` action run by POST .../deployments/retry when its last result failed.
    retry: ActionSettings | None = None
    # `airflow`: health from Airflow's own monitor, failed task instances listed and cleared.
    kind: Literal["airflow"] | None = None
    api_url: UrlPerRegion | None = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    password: str | SecretReference | None = None

    @model_validator(mode="after")
    def _rules(self) -> Deployment:
        where = f"deployment {self.name!r}"
        if self.kind == "airflow":
            if not (self.api_url and self.username and self.password):
                raise ValueError(f"{where}: an airflow deployment has api_url, username, password")
        elif self.api_url or self.username or self.password:
            raise ValueError(f'{where}: api_url, username and password need "kind": "airflow"')
        if self.retry is not None:
            if self.retry.get("kind") != "http":
                raise ValueError(f"{where}: retry is an http action")
            found = actions.settings_problems(self.retry)
            if found:
                raise ValueError(f"{where}: retry: {found[0]}")
        found = templating.problems(
            {"health": self.health.model_dump() if self.health else None, "pw": self.password},
            extra=frozenset({"region", "name"}),
        )
        if found:
            raise ValueError(f"{where}: {found[0]}")
        return self

    def checked(self) -> bool:
        """Has a health check: validate_deployments looks at it."""
        return self.health is not None or self.kind == "airflow"


Objective = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S), JSON_NUMBER]
# The worker starts a drill when the pair's last one started longer ago (or never).
DrillEveryDays = Annotated[int, Field(ge=1, le=365), JSON_NUMBER]
LabelKey = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$"
    ),
]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=r"^[A-Za-z0-9._-]*$")]
# Up to 32 labels; a selector matches a pair that has every label it names, with its value.
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=32)]


class ClusterCreate(Strict):
    name: Name
    primary: Site
    secondary: Site
    # A pair has a `driver` (the default plan, every step through it) or a `plan`.
    driver: SimulatedDriver | None = None
    plan: Plan | None = None
    deployments: list[Deployment] = Field(default_factory=list, max_length=500)
    rto_target_s: Objective | None = None
    rpo_target_s: Objective | None = None
    # Days between drills (DESIGN.md section 14); null: no schedule.
    drill_every_days: DrillEveryDays | None = None
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _two_regions(self) -> ClusterCreate:
        if self.primary.region == self.secondary.region:
            raise ValueError("primary and secondary must be in different regions")
        if self.driver is not None and self.plan is not None:
            raise ValueError("a pair has a `driver` or a `plan`, not both")
        return self


class ClusterPatch(Strict):
    """Settings that may change; the sites of a pair are fixed once registered."""

    name: Name | None = None
    # Setting one of `driver` and `plan` clears the other.
    driver: SimulatedDriver | None = None
    plan: Plan | None = None
    deployments: list[Deployment] | None = Field(default=None, max_length=500)
    rto_target_s: Objective | None = None
    rpo_target_s: Objective | None = None
    # Days between drills (DESIGN.md section 14); null: no schedule.
    drill_every_days: DrillEveryDays | None = None
    # Replaces every label (`{}` removes them all). A JSON null changes nothing, as leaving the
    # field out does; the document shows only the object (an anonymous union otherwise).
    labels: Labels | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one_of(self) -> ClusterPatch:
        if self.driver is not None and self.plan is not None:
            raise ValueError("a pair has a `driver` or a `plan`, not both")
        return self


class ClusterOut(Strict):
    id: str
    name: str
    primary: Site
    secondary: Site
    driver: SimulatedDriver | None
    plan: Plan | None
    deployments: list[Deployment]
    rto_target_s: float | None
    rpo_target_s: float | None
    # Days between scheduled drills; null: none scheduled.
    drill_every_days: int | None = None
    labels: dict[str, str]
    state: ClusterState
    # The last readiness evaluation's verdict (GET .../readiness); null: not evaluated yet.
    ready: bool | None = None
    active_region: str
    version: int
    last_operation_id: str | None
    needs_attention: bool
    allowed_actions: list[PairAction]
    created_at: datetime
    updated_at: datetime

    @field_serializer("deployments")
    def _as_sent(self, deployments: list[Deployment]) -> list[dict[str, Any]]:
        """Each deployment as it was sent: the settings left out stay out."""
        return [d.model_dump(mode="json", exclude_defaults=True) for d in deployments]


class ClusterCreated(ClusterOut):
    """The 201 body: the pair, and its runbook secret, shown this once."""

    runbook_secret: str


class RunbookSecret(Strict):
    """A new runbook secret, shown this once; the previous one also signs until
    `previous_expires_at`."""

    runbook_secret: str
    previous_expires_at: datetime
