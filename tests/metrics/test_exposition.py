"""The families read from the database are written as Prometheus text by hand (for speed,
app.metrics.service): what prometheus-client's parser reads back is what prometheus-client
itself would have written, label values that need escaping included."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from app.metrics.service import HELP, STATES, Pair, Snapshot, exposition

ODD_CLOUD = 'on "prem" \\ rack\n7'


def snapshot() -> Snapshot:
    return Snapshot(
        pairs=[
            Pair(
                "orders",
                "secondary-active",
                "us-west-2",
                (("aws", "us-east-1"), (ODD_CLOUD, "us-west-2")),
                True,
                900.0,
                60.5,
            ),
            Pair(
                "billing",
                "primary-active",
                "eu-west-1",
                (("gcp", "eu-west-1"), ("gcp", "eu-north-1")),
                None,
                None,
                None,
            ),
        ],
        in_progress=2,
        needing_attention=1,
        oldest_running_s=12.25,
        oldest_pending_s=0.0,
    )


def with_prometheus_client(shot: Snapshot) -> str:
    """The same families through GaugeMetricFamily and generate_latest."""
    families = {name: GaugeMetricFamily(name, doc, labels=None) for name, doc in HELP.items()}
    labelled = {
        "tandem_pair_info": ["pair", "cloud", "cloud_region", "role"],
        "tandem_pair_state": ["pair", "state"],
        "tandem_pair_ready": ["pair"],
        "tandem_replication_lag_seconds": ["pair", "cloud_region"],
        "tandem_pair_rto_target_seconds": ["pair"],
        "tandem_pair_rpo_target_seconds": ["pair"],
    }
    for name, labels in labelled.items():
        families[name] = GaugeMetricFamily(name, HELP[name], labels=labels)
    for pair in shot.pairs:
        for cloud, region in pair.sides:
            role = "active" if region == pair.active_region else "standby"
            families["tandem_pair_info"].add_metric([pair.name, cloud, region, role], 1)
        for state in STATES:
            families["tandem_pair_state"].add_metric([pair.name, state], int(state == pair.state))
        if pair.ready is not None:
            families["tandem_pair_ready"].add_metric([pair.name], int(pair.ready))
        if pair.rto_target_s is not None:
            families["tandem_pair_rto_target_seconds"].add_metric([pair.name], pair.rto_target_s)
        if pair.rpo_target_s is not None:
            families["tandem_pair_rpo_target_seconds"].add_metric([pair.name], pair.rpo_target_s)
    families["tandem_operations_in_progress"].add_metric([], shot.in_progress)
    families["tandem_operations_needing_attention"].add_metric([], shot.needing_attention)
    families["tandem_operation_oldest_running_seconds"].add_metric([], shot.oldest_running_s)
    families["tandem_webhook_oldest_pending_seconds"].add_metric([], shot.oldest_pending_s)

    class Collector:
        def collect(self) -> list[Metric]:
            return list(families.values())

    return generate_latest(Collector()).decode()


def parsed(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    ]


def test_the_text_reads_back_as_prometheus_clients_own() -> None:
    shot = snapshot()
    ours = exposition(shot)
    assert parsed(ours) == parsed(with_prometheus_client(shot))
    info = next(f for f in text_string_to_metric_families(ours) if f.name == "tandem_pair_info")
    odd = [s for s in info.samples if s.labels["cloud_region"] == "us-west-2"]
    assert [(s.labels["cloud"], s.labels["role"]) for s in odd] == [(ODD_CLOUD, "active")]


def test_every_family_is_written_without_pairs() -> None:
    text = exposition(Snapshot([], 0, 0, 0.0, 0.0))
    assert [(f.name, f.type) for f in text_string_to_metric_families(text)] == [
        (name, "gauge") for name in HELP
    ]
