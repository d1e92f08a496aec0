"""The CLI: `chanscale explain` answers "why did it scale?" from a status."""

import pytest

from chanscale.cli import build_parser, explain_text

pytestmark = pytest.mark.unit


def test_explain_text_names_reason_limits_and_policy() -> None:
    wp = {
        "metadata": {"namespace": "shop", "name": "orders"},
        "spec": {"channel": "orders"},
        "status": {
            "targetName": "orders-worker",
            "lastDecision": {
                "time": "2026-11-23T11:50:30Z",
                "outcome": "ScaleUp",
                "from": 4,
                "to": 6,
                "recommendation": 15,
                "applied": True,
                "reason": "policy clamped 4 -> 15 to 6: step limit",
                "limitedBy": ["policy: step limit +2"],
                "sizing": {
                    "terms": {"throughput": 13, "drain": 15, "latency": 12},
                    "driver": "drain",
                    "arrivalRate": 200,
                    "serviceRate": 20,
                },
                "inputs": {"backlog": 3000},
                "policy": {
                    "path": "chanscale/main/decision",
                    "allow": True,
                    "replicas": 6,
                    "proposed": 15,
                    "reasons": ["step limit +2"],
                    "source": "opa",
                },
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok"}],
        },
    }
    text = explain_text(wp)
    assert "4 -> 6" in text and "clamped to 6" in text and "step limit +2" in text
    assert "driver: drain" in text and "Ready" in text


def test_explain_without_status() -> None:
    assert "no decision recorded yet" in explain_text({"metadata": {}, "spec": {}})


def test_run_flags_parse() -> None:
    args = build_parser().parse_args(["run", "--standalone", "--opa", "none", "--tick", "2", "-n", "a", "-n", "b"])
    assert args.standalone and args.opa == "none" and args.tick == 2 and args.namespace == ["a", "b"]


def test_direct_metrics_flags_are_checked() -> None:
    from chanscale.cli import direct_from_args

    parse = build_parser().parse_args
    assert direct_from_args(parse(["run"])) is None  # off by default
    settings = direct_from_args(parse(["run", "--direct-metrics", "--direct-metrics-period", "3"]))
    assert (settings.period, settings.timeout) == (3.0, 0.5)
    with pytest.raises(SystemExit, match="needs the fast path"):
        direct_from_args(parse(["run", "--direct-metrics", "--fast-path-period", "0"]))
    with pytest.raises(SystemExit, match="timeout"):
        direct_from_args(parse(["run", "--direct-metrics", "--direct-metrics-timeout", "5"]))
