"""The Helm chart (helm/tandem), rendered by the real helm (v4) and checked against the
schemas of Kubernetes 1.34 with kubernetes-validate.

helm and kubectl are the binaries .ci/run unpacks into .ci/bin; without them these tests
skip, unless TANDEM_TEST_REQUIRE_SERVICES=1 (CI), where they fail. The ServiceMonitor and
the PrometheusRule are the Prometheus Operator's kinds, which kubernetes-validate has no
schema for: they are checked here against schemas of the fields the chart uses, written
from the operator's API (monitoring.coreos.com/v1), strict about anything else.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.backends import backends

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "tandem"
EXAMPLE = CHART / "examples" / "production.yaml"
HELM = ROOT / ".ci" / "bin" / "helm"
KUBECTL = ROOT / ".ci" / "bin" / "kubectl"
KUBERNETES = "1.34.0"
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}

# What the same keys in a Secret must hold when the chart does not make it.
SECRET_ENV = {
    "TANDEM_DATABASE_URL": "database-url",
    "TANDEM_REDIS_URL": "redis-url",
    "TANDEM_SECRET_KEY": "secret-key",
    "TANDEM_BOOTSTRAP_TOKEN": "bootstrap-token",
}
FERNET_KEY = "x" * 43 + "="


@pytest.fixture(scope="module", autouse=True)
def binaries() -> None:
    from tests.conftest import BACKEND, REQUIRE_SERVICES

    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")
    if not (HELM.exists() and KUBECTL.exists()):
        message = f"no helm/kubectl in {HELM.parent} (.ci/run unpacks them there)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def render(*args: str) -> list[dict[str, Any]]:
    done = helm("template", "tandem", str(CHART), "--namespace", "dr", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refused(*args: str) -> str:
    done = helm("template", "tandem", str(CHART), *args)
    assert done.returncode != 0, f"rendered: helm template {' '.join(args)}"
    return done.stderr


def production(*sets: str) -> list[dict[str, Any]]:
    return render("-f", str(EXAMPLE), *[arg for s in sets for arg in ("--set", s)])


def with_values_secrets(*sets: str) -> list[dict[str, Any]]:
    return render(
        "--set",
        "secrets.databaseUrl=postgresql://tandem:pw@db:5432/tandem",
        "--set",
        "secrets.redisUrl=redis://redis:6379/0",
        "--set",
        f"secrets.secretKey={FERNET_KEY}",
        *[arg for s in sets for arg in ("--set", s)],
    )


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"].endswith(name))
    ]
    assert len(found) == 1, f"{len(found)} {kind} named *{name}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in c["env"]}


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


# The Prometheus Operator's fields that the chart renders (monitoring.coreos.com/v1).
_SECRET_KEY_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["credentials"],
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": _SECRET_KEY_SELECTOR,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate(docs: list[dict[str, Any]]) -> None:
    """Every document against Kubernetes 1.34's schema (strict), or the operator's."""
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR)
        elif doc["kind"] == "PrometheusRule":
            jsonschema.validate(doc, PROMETHEUS_RULE)
        else:
            # SchemaNotFoundError (an unknown kind or apiVersion) fails the test too.
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_helm_lint_strict_passes_for_the_defaults_and_the_example() -> None:
    for extra in ([], ["-f", str(EXAMPLE)]):
        linted = helm("lint", "--strict", str(CHART), *extra)
        assert linted.returncode == 0, linted.stdout + linted.stderr
        assert "0 chart(s) failed" in linted.stdout
        assert "[WARNING]" not in linted.stdout and "[ERROR]" not in linted.stdout


def test_the_rendered_manifests_are_valid_for_kubernetes_1_34() -> None:
    default = render()
    assert kinds(default) == ["Deployment", "PodDisruptionBudget", "Service"]
    validate(default)
    example = production()
    assert set(kinds(example)) == {
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    }
    validate(example)
    validate(with_values_secrets())


def test_the_validation_would_catch_a_mistake() -> None:
    deployment = one(production(), "Deployment", "-api")
    container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate([deployment])
    deployment["apiVersion"] = "apps/v2"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate([deployment])
    monitor = one(production(), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["bearerTokenFile"] = "/var/run/token"
    with pytest.raises(jsonschema.ValidationError):
        validate([monitor])


def test_the_api_deployment_probes_and_runs_locked_down() -> None:
    docs = production()
    api = one(docs, "Deployment", "-api")
    c = container(api)
    assert c["args"] == ["serve"]
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("http", 8000)
    assert env_of(c)["TANDEM_PORT"]["value"] == "8000"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    pod = api["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 75  # the example's
    for workload in workloads(docs):
        c = container(workload)
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        # What Tandem writes (TANDEM_DATA_DIR, temporary files) is an emptyDir.
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        data_dir = env_of(c)["TANDEM_DATA_DIR"]["value"]
        for path in (data_dir, "/tmp"):
            assert "emptyDir" in volumes[mounts[path]]


def test_the_worker_is_probed_on_its_health_port() -> None:
    worker = one(production("worker.healthPort=9101"), "Deployment", "-worker")
    c = container(worker)
    assert c["args"] == ["worker"]
    assert env_of(c)["TANDEM_WORKER_HEALTH_PORT"]["value"] == "9101"
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("health", 9101)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60


def test_the_example_runs_three_api_pods_and_three_workers_scaled_apart() -> None:
    docs = production()
    assert one(docs, "Deployment", "-api")["spec"]["replicas"] == 3
    assert one(docs, "Deployment", "-worker")["spec"]["replicas"] == 3
    scaled = production("api.replicaCount=5", "worker.replicaCount=2")
    assert one(scaled, "Deployment", "-api")["spec"]["replicas"] == 5
    assert one(scaled, "Deployment", "-worker")["spec"]["replicas"] == 2
    api = container(one(docs, "Deployment", "-api"))["resources"]
    assert api["requests"] == {"cpu": "500m", "memory": "512Mi"}


def test_migrations_run_in_a_hook_job_before_the_deployments() -> None:
    job = one(production(), "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert container(job)["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert env_of(container(job))["TANDEM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    # The embedded default migrates as it starts: no Job, no separate workers.
    default = render()
    assert "Job" not in kinds(default)
    assert one(default, "Deployment")["spec"]["replicas"] == 1
    assert one(default, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_an_existing_secret_is_referenced_and_no_credentials_are_rendered() -> None:
    docs = production()
    assert "Secret" not in kinds(docs)
    rendered = yaml.safe_dump_all(docs)
    assert "postgresql" not in rendered and "redis://" not in rendered
    for workload in workloads(docs):
        env = env_of(container(workload))
        for name, key in SECRET_ENV.items():
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("tandem-credentials", key)
            assert "value" not in env[name]
        assert env["TANDEM_BOOTSTRAP_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_documented_secret_has_the_keys_the_chart_reads() -> None:
    # The command in the example's comment, run offline by kubectl.
    made = subprocess.run(
        [
            KUBECTL,
            "create",
            "secret",
            "generic",
            "tandem-credentials",
            "--from-literal=database-url=postgresql+asyncpg://tandem:pw@db:5432/tandem",
            "--from-literal=redis-url=redis://redis:6379/0",
            f"--from-literal=secret-key={FERNET_KEY}",
            "--from-literal=bootstrap-token=tdm_x",
            "--dry-run=client",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)
    validate([secret])
    assert "kubectl create secret generic tandem-credentials" in EXAMPLE.read_text()
    keys = {
        ref["valueFrom"]["secretKeyRef"]["key"]
        for ref in env_of(container(one(production(), "Deployment", "-api"))).values()
        if "valueFrom" in ref
    }
    assert keys == set(secret["data"])


def test_secrets_from_values_go_into_a_secret_made_before_the_migration() -> None:
    docs = with_values_secrets("secrets.bootstrapToken=tdm_boot")
    secret = one(docs, "Secret")
    assert secret["stringData"] == {
        "database-url": "postgresql://tandem:pw@db:5432/tandem",
        "redis-url": "redis://redis:6379/0",
        "secret-key": FERNET_KEY,
        "bootstrap-token": "tdm_boot",
    }
    # A hook of its own, weighed before the migration Job that reads it.
    weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
    job = one(docs, "Job")
    assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for workload in workloads(docs):
        env = env_of(container(workload))
        for name in SECRET_ENV:
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    # Pods that could not share data, or a worker without Redis, are refused.
    assert "secretKey" in refused(
        "--set", "secrets.databaseUrl=postgresql://db/t", "--set", "secrets.redisUrl=redis://r"
    )
    assert "redisUrl" in refused(
        "--set", "secrets.databaseUrl=postgresql://db/t", "--set", f"secrets.secretKey={FERNET_KEY}"
    )


def test_settings_become_tandem_variables(tmp_path: Path) -> None:
    docs = production(
        "settings.LOG_LEVEL=debug",
        "settings.webhook_timeout_s=5",
        "settings.WEBHOOK_RETRY_SCHEDULE_S={1,2,3}",
        "settings.STREAMS_PER_PROCESS=1000000",
        "settings.WEBHOOK_RETRY_JITTER=0.25",
    )
    env = env_of(container(one(docs, "Deployment", "-worker")))
    assert env["TANDEM_LOG_LEVEL"]["value"] == "debug"
    assert env["TANDEM_WEBHOOK_TIMEOUT_S"]["value"] == "5"
    assert json.loads(env["TANDEM_WEBHOOK_RETRY_SCHEDULE_S"]["value"]) == [1, 2, 3]
    assert env["TANDEM_STREAMS_PER_PROCESS"]["value"] == "1000000"
    assert env["TANDEM_WEBHOOK_RETRY_JITTER"]["value"] == "0.25"
    # From a values file too, where YAML numbers arrive as floats.
    values = tmp_path / "values.yaml"
    values.write_text("settings:\n  STREAMS_PER_PROCESS: 2000000\n  LEASE_TTL_S: 6.5\n")
    from_file = env_of(
        container(one(render("-f", str(EXAMPLE), "-f", str(values)), "Deployment", "-api"))
    )
    assert from_file["TANDEM_STREAMS_PER_PROCESS"]["value"] == "2000000"
    assert from_file["TANDEM_LEASE_TTL_S"]["value"] == "6.5"
    # Each setting the example names is one of Tandem's (app/config.py).
    from app.config import Settings

    example = yaml.safe_load(EXAMPLE.read_text())
    assert {name.lower() for name in example["settings"]} <= set(Settings.model_fields)
    # What the chart owns cannot be set twice.
    assert "DATABASE_URL" in refused("--set", "settings.DATABASE_URL=postgresql://x/y")


def test_the_values_schema_catches_typos() -> None:
    assert "replicaCont" in refused("--set", "api.replicaCont=3")
    assert "replicaCount" in refused("--set", "replicaCount=3")
    assert "databaseUrl" in refused("--set", "secrets.databaseUrl=mysql://db/t")
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_one_disruption_budget_per_deployment() -> None:
    docs = production()
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(budgets) == len(deployments) == 2
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, deployment["metadata"]["name"]
    assert "PodDisruptionBudget" not in kinds(production("podDisruptionBudget.enabled=false"))


def test_the_prometheus_rule_carries_exactly_the_alert_rules() -> None:
    deployed = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    copied = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    assert copied == deployed, "helm/tandem/files/alerts.yml differs from deploy/prometheus/"
    rule = one(production(), "PrometheusRule")
    assert rule["spec"]["groups"] == deployed["groups"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert "PrometheusRule" not in kinds(render())


def test_the_service_monitor_scrapes_the_api_and_every_worker() -> None:
    docs = production()
    monitor = one(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s
        for s in docs
        if s["kind"] == "Service" and selector.items() <= s["metadata"]["labels"].items()
    ]
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert set(endpoints) == {"http", "health"} <= ports
    for endpoint in endpoints.values():
        assert endpoint["path"] == "/metrics"
        assert endpoint["authorization"]["credentials"] == {
            "name": "tandem-metrics-token",
            "key": "token",
        }
    # Each worker pod is a target of its own.
    worker_service = one(docs, "Service", "-worker")
    assert worker_service["spec"]["clusterIP"] == "None"
    assert "bearerTokenSecret" in refused(
        "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.bearerTokenSecret.name="
    )


def test_the_chart_ships_the_version_of_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    image = container(one(render(), "Deployment"))["image"]
    assert image == f"tandem:{project['version']}"
    notes = helm("install", "tandem", str(CHART), "--dry-run=client", "--namespace", "dr")
    assert notes.returncode == 0, notes.stderr
    assert re.search(r"EMBEDDED", notes.stdout)
