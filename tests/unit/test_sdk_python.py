"""The Python worker SDK (sdk/python/chanscale_sdk): the contract's series, counted once each."""

from __future__ import annotations

import pytest
from chanscale_sdk import DEFAULT_BUCKETS, ChannelMetrics, Pool  # sdk/python is on pytest's pythonpath
from prometheus_client import CollectorRegistry, generate_latest

pytestmark = pytest.mark.unit


def _value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, {"channel": "orders", **labels})


def test_pool_counts_every_message_once_and_drains_the_backlog() -> None:
    reg = CollectorRegistry()
    m = ChannelMetrics("orders", registry=reg)

    def handle(v: int) -> None:
        if v % 2:
            raise ValueError("odd")

    pool: Pool[int] = Pool(m, handle, workers=3)
    for i in range(10):
        pool.submit(i)
    assert _value(reg, "chanscale_channel_backlog") == 10  # the queue's size, before any worker runs
    pool.start()
    pool.stop()
    assert _value(reg, "chanscale_channel_enqueued_total") == 10
    assert _value(reg, "chanscale_channel_processed_total") == 5
    assert _value(reg, "chanscale_channel_failed_total") == 5
    assert _value(reg, "chanscale_channel_latency_seconds_count") == 10
    assert _value(reg, "chanscale_channel_latency_seconds_bucket", le="+Inf") == 10
    assert _value(reg, "chanscale_channel_backlog") == 0


def test_busy_seconds_include_in_flight_work() -> None:
    now = [1000.0]
    reg = CollectorRegistry()
    m = ChannelMetrics("orders", registry=reg, clock=lambda: now[0])
    with m.job(enqueued_at=999.0):
        now[0] += 2
        assert _value(reg, "chanscale_channel_busy_seconds_total") == 2  # while still running
        now[0] += 1
    now[0] += 5
    assert _value(reg, "chanscale_channel_busy_seconds_total") == 3
    assert _value(reg, "chanscale_channel_latency_seconds_sum") == 4  # from enqueue (999) to done (1003)
    assert _value(reg, "chanscale_channel_latency_seconds_bucket", le="5") == 1
    assert _value(reg, "chanscale_channel_latency_seconds_bucket", le="2") == 0


def test_exposition_labels_and_bucket_names_match_the_go_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    reg = CollectorRegistry()
    m = ChannelMetrics("orders", registry=reg)
    m.add_backlog(lambda: 7)  # e.g. a broker's pending count
    ChannelMetrics("audit", namespace="shop", registry=reg)
    text = generate_latest(reg).decode()
    assert 'chanscale_channel_backlog{channel="orders"} 7.0' in text  # no empty namespace label
    assert 'chanscale_channel_backlog{channel="audit",namespace="shop"} 0.0' in text
    assert 'le="1"' in text and 'le="0.005"' in text and 'le="1.0"' not in text
    assert len(DEFAULT_BUCKETS) == text.count('channel="orders",le=') - 1  # + the +Inf bucket
    with pytest.raises(ValueError, match="already registered"):
        ChannelMetrics("orders", registry=reg)
    with pytest.raises(ValueError, match=r"spec\.channel"):
        ChannelMetrics("", registry=reg)


def test_a_new_registry_never_inherits_a_dead_registrys_channels() -> None:
    """CPython reuses a freed object's id() at once: state keyed by id(registry) leaked into the next registry."""
    import gc

    for _ in range(50):
        reg = CollectorRegistry()
        ChannelMetrics("orders", registry=reg)
        del reg
        gc.collect()
