"""The demo's pure parts: trace, manifests, sampling, live view, and the plot + summary from synthetic samples."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from chanscale import demo
from chanscale.demo_plot import DemoRecord, Mark, Phase, Sample, summarize, summary_markdown, write_outputs

pytestmark = pytest.mark.unit

SLO = 1.0


def synthetic_record() -> DemoRecord:
    """A run shaped like the real one: quiet, a burst the step limit clamps, a drain, a scale-down."""
    sc = demo.Scenario()
    phases = demo.bursty_trace(100, sc)
    rec = DemoRecord(
        slo_p99=SLO,
        max_backlog=300,
        phases=phases,
        pool="chanscale-demo/orders",
        policy_parameters=sc.policy_parameters,
    )
    replicas, backlog = 4, 0.0
    for t in range(100):
        rate = demo.phase_at(phases, t).rate
        capacity = replicas * sc.service_rate
        backlog = max(0.0, backlog + rate - capacity)
        want = min(30, int(rate / 8) + 1 + int(backlog / 100))
        mark = None
        if want > replicas:
            new = min(want, replicas + sc.step_up)
            if new < want:
                mark = Mark(t, "clamp", replicas, new, want, [f"step: at most +{sc.step_up} replicas per decision"])
            replicas = new
        elif want < replicas and t % 5 == 0:
            replicas = max(want, replicas - 2)
        p99 = 0.4 + backlog / max(capacity, 1.0)
        rec.samples.append(
            Sample(
                t=float(t),
                arrival_rate=rate,
                backlog=backlog,
                ready_workers=replicas,
                replicas=replicas,
                desired=replicas,
                recommended=want,
                p99=None if t < 2 else p99,
                outcome="ScaleUp",
                reason="because",
                limited_by=[],
            )
        )
        if mark:
            rec.marks.append(mark)
    rec.marks.append(Mark(60.0, "deny", 10, 10, 12, ["windows: freeze"]))
    return rec


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# ------------------------------------------------------------------------------------------- trace and objects
def test_trace_is_quiet_burst_quiet_burst_quiet_and_covers_the_duration() -> None:
    sc = demo.Scenario()
    phases = demo.bursty_trace(240, sc)
    assert [p.burst for p in phases] == [False, True, False, True, False]
    assert phases[0].start == 0 and phases[-1].end == 240
    assert all(a.end == b.start for a, b in itertools.pairwise(phases))
    assert phases[1].rate == sc.base_rate * 5
    assert demo.phase_at(phases, 0).label == "quiet"
    assert demo.phase_at(phases, 60).burst
    assert demo.phase_at(phases, 10_000) is phases[-1]


def test_manifests_use_the_policy_step_limit_and_a_short_rate_window() -> None:
    sc = demo.Scenario()
    wp = demo.worker_pool(sc)
    assert wp["spec"]["scaleTargetRef"]["name"] == demo.worker_deployment(sc)["metadata"]["name"]
    assert wp["spec"]["policy"]["parameters"]["step"]["maxUp"] == sc.step_up
    assert wp["spec"]["slo"]["p99LatencySeconds"] == sc.slo_p99
    assert wp["spec"]["minReplicas"] <= sc.initial_replicas <= wp["spec"]["maxReplicas"]
    ch = demo.sim_channels(sc)[0]
    assert (ch["namespace"], ch["channel"], ch["deployment"]) == (demo.NAMESPACE, demo.CHANNEL, demo.DEPLOYMENT)


def test_pool_manifest_validates_against_the_crd_schema() -> None:
    import jsonschema
    import yaml

    from chanscale.local.binaries import REPO_ROOT

    crd = yaml.safe_load((REPO_ROOT / "crds" / "chanscale.dev_workerpools.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def strip(node: Any) -> Any:  # OpenAPI extensions are not JSON Schema keywords
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    # OpenAPI v3 schemas use draft 4's boolean exclusiveMinimum.
    jsonschema.Draft4Validator(strip(schema)).validate(demo.worker_pool(demo.Scenario())["spec"])


# --------------------------------------------------------------------------------------------------- sampling
def status(time: str, quiet: str | None = None, **policy: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "time": time,
        "from": 4,
        "to": 6,
        "outcome": "ScaleUp",
        "reason": "r",
        "limitedBy": ["policy: step"],
        "policy": policy or None,
    }
    if quiet:
        d.update(lastQuietTick=quiet, quietReason="held", quietLimitedBy=["policy: windows: freeze"])
    return {
        "status": {
            "replicas": 6,
            "desiredReplicas": 6,
            "recommendedReplicas": 9,
            "lastEvaluated": quiet or time,
            "signals": {"p99LatencySeconds": 1.5},
            "lastDecision": d,
        }
    }


def test_sampler_marks_each_clamped_decision_once_and_policy_holds_on_quiet_ticks() -> None:
    sampler = demo.Sampler()
    sim = {"arrival_rate": 150.0, "backlog": 400, "ready_workers": 4, "desired_workers": 6}
    clamp = {"allow": True, "replicas": 6, "proposed": 9, "reasons": ["step: at most +2"]}
    s, marks = sampler.make(1.0, sim, status("T1", **clamp))
    assert (s.replicas, s.desired, s.recommended, s.p99, s.backlog) == (6, 6, 9, 1.5, 400.0)
    assert [(m.kind, m.proposed, m.reasons) for m in marks] == [("clamp", 9, ["step: at most +2"])]
    assert sampler.make(2.0, sim, status("T1", **clamp))[1] == []  # same decision seen again
    s, marks = sampler.make(3.0, sim, status("T1", quiet="T2", **clamp))
    assert [(m.kind, m.reasons) for m in marks] == [("deny", ["windows: freeze"])]
    assert s.reason == "held" and s.limited_by == ["policy: windows: freeze"]
    _, marks = sampler.make(4.0, sim, status("T3", allow=False, replicas=None, proposed=9, reasons=["no"]))
    assert [m.kind for m in marks] == ["deny"]
    _, marks = sampler.make(5.0, sim, status("T4", allow=True, replicas=None, proposed=9, reasons=["ok"]))
    assert marks == []


def test_sampler_without_status_keeps_unknowns_as_none() -> None:
    s, marks = demo.Sampler().make(0.0, {"arrival_rate": 30.0, "backlog": 0}, None)
    assert s.p99 is None and s.desired is None and s.backlog == 0.0 and marks == []


# -------------------------------------------------------------------------------------------------- live view
def test_tui_redraws_in_place_and_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = synthetic_record()
    monkeypatch.setattr(
        demo.shutil, "get_terminal_size", lambda fallback=(0, 0): __import__("os").terminal_size((80, 20))
    )
    out = io.StringIO()
    view = demo.LiveView(out, tui=True, duration=100, slo=SLO)
    view.start()
    for s in rec.samples[:3]:
        view.update(s, rec.phases[0], rec.marks, rec.samples, [])
    view.close()
    text = out.getvalue()
    assert text.count("\x1b[J") == 3
    assert "\x1b[" in text and "F\x1b[J" in text  # cursor back up over the previous block
    for width in (40, 80):
        lines = demo.render_block(rec.samples[50], rec.phases[2], 100, SLO, rec.marks, rec.samples, width)
        assert all(len(ln) <= width for ln in lines)
    assert any("P99" in ln and "SLO" in ln for ln in lines)


def test_plain_view_prints_a_line_every_few_seconds_and_every_policy_mark() -> None:
    rec = synthetic_record()
    out = io.StringIO()
    view = demo.LiveView(out, tui=False, duration=100, slo=SLO, plain_every=5)
    for s in rec.samples[:40]:
        view.update(s, demo.phase_at(rec.phases, s.t), rec.marks, rec.samples, [m for m in rec.marks if m.t == s.t])
    text = out.getvalue()
    assert "\x1b" not in text
    assert sum(1 for ln in text.splitlines() if ln.startswith("t=") and "arrivals=" in ln) == 8
    assert "policy clamp: step" in text


def test_sparkline_scales_to_the_maximum() -> None:
    assert demo.sparkline([0.0, 5.0, 10.0, None], 10) == "▁▄█ "
    assert demo.sparkline([None, None], 10) == ""


# ------------------------------------------------------------------------------------------ plot and summary
def test_summary_numbers_from_synthetic_samples() -> None:
    rec = synthetic_record()
    sm = summarize(rec)
    assert sm["samples"] == 100
    assert sm["replicasFirst"] == 4 and sm["replicasMax"] > sm["replicasFirst"]
    assert sm["scaleUps"] > 0 and sm["scaleDowns"] > 0
    assert sm["policyClamps"] == sum(m.kind == "clamp" for m in rec.marks) > 0
    assert sm["policyDenials"] == 1
    assert 0.0 <= sm["sloMetFraction"] <= 1.0
    assert [b["label"] for b in sm["bursts"]] == ["burst 1 ×5", "burst 2 ×4"]
    assert sm["bursts"][0]["firstScaleUpAfter"] is not None
    md = summary_markdown(rec, sm)
    assert "![run](demo.png)" in md and "| burst 1 ×5" in md and "step: at most +2" in md


def test_write_outputs_makes_png_summary_and_json(tmp_path: Path) -> None:
    rec = synthetic_record()
    png, md, data, _ = write_outputs(rec, tmp_path / "out")
    w, h = png_size(png)
    assert w > 800 and h > 600
    assert md.read_text().startswith("# chanscale demo")
    doc = json.loads(data.read_text())
    assert len(doc["samples"]) == 100 and doc["summary"]["policyClamps"] > 0
    again = DemoRecord.from_json(doc)
    assert again.samples == rec.samples and again.marks == rec.marks and again.phases == rec.phases


def test_outputs_from_an_interrupted_run_with_missing_values(tmp_path: Path) -> None:
    rec = DemoRecord(
        slo_p99=SLO,
        max_backlog=None,
        phases=[Phase(0, 50, 30, "quiet"), Phase(50, 100, 150, "burst")],
        interrupted=True,
    )
    rec.samples = [Sample(t=0.0), Sample(t=1.0, backlog=3, replicas=2, p99=50.0)]
    png, md, _, sm = write_outputs(rec, tmp_path)
    assert png.exists() and "interrupted" in md.read_text()
    assert sm["sloMetFraction"] == 0.0


# ------------------------------------------------------------------------------------------------ entry point
def test_missing_tools_fail_with_make_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANSCALE_BIN", str(tmp_path / "nothing"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("CHANSCALE_OPA_BIN", str(tmp_path / "no-opa"))
    monkeypatch.setattr("chanscale.local.binaries._SYSTEM_FALLBACKS", {})
    monkeypatch.setattr("chanscale.local.binaries.REPO_ROOT", tmp_path)
    args = argparse.Namespace(kubeconfig=None, duration=40, out=str(tmp_path / "out"), no_tui=True)
    assert demo.main(args) == 2
    err = capsys.readouterr().err
    assert "make tools" in err and "kube-apiserver" in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(kubeconfig=str(tmp_path / "missing"), duration=40, out=str(tmp_path), no_tui=True)
    assert demo.main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    args = argparse.Namespace(kubeconfig=None, duration=5, out=str(tmp_path), no_tui=True)
    assert demo.main(args) == 2
