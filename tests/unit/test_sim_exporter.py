"""The simulator's exposition matches the metrics contract, and Prometheus' parser accepts it."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chanscale.sim.exporter import channel_from_config, render_metrics

pytestmark = pytest.mark.unit


def test_exposition_is_the_metrics_contract() -> None:
    ch = channel_from_config(
        {"namespace": "ns", "channel": "orders", "serviceRate": 10, "arrivalRate": 50, "replicas": 2}, seed=1
    )
    ch.model.advance(30.0)
    fams = {f.name: f for f in text_string_to_metric_families(render_metrics([ch]))}
    for name in (
        "chanscale_channel_backlog",
        "chanscale_channel_enqueued",
        "chanscale_channel_processed",
        "chanscale_channel_failed",
        "chanscale_channel_busy_seconds",
        "chanscale_channel_latency_seconds",
    ):
        assert name in fams, name
    backlog = fams["chanscale_channel_backlog"].samples[0]
    assert backlog.labels == {"namespace": "ns", "channel": "orders"}
    assert backlog.value > 0  # 50/s arrive, 2 workers serve 20/s
    buckets = [s for s in fams["chanscale_channel_latency_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)


def test_trace_drives_arrival_rate() -> None:
    ch = channel_from_config(
        {"namespace": "ns", "channel": "c", "serviceRate": 10, "trace": [[0, 5], [10, 50]], "loopSeconds": 20},
        seed=1,
    )
    assert ch.rate_at(1) == 5 and ch.rate_at(12) == 50 and ch.rate_at(21) == 5
    ch.override = 7
    assert ch.rate_at(12) == 7


def test_missing_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"channels\[\]\.serviceRate"):
        channel_from_config({"namespace": "ns", "channel": "c"}, seed=1)
