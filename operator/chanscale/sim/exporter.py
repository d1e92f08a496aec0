"""``chanscale sim``: simulated channels in real time, served as the metrics contract.

Each configured channel is a :class:`~chanscale.sim.model.ChannelModel` whose workers are the replicas of a real
Deployment (read from the API server), so the loop is closed: the operator's decisions change the backlog that
Prometheus scrapes here. Load follows a trace and can be changed at run time with ``POST /control``.

Endpoints: ``GET /metrics`` (Prometheus text format), ``GET /state`` (JSON), ``POST /control``
(``{"namespace", "channel", "arrivalRate"}``), ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .model import ChannelModel

log = logging.getLogger("chanscale.sim")


@dataclass
class SimChannel:
    namespace: str
    channel: str
    model: ChannelModel
    deployment: str | None = None
    trace: list[tuple[float, float]] = field(default_factory=list)  # (seconds from start, arrival rate)
    loop_seconds: float | None = None
    override: float | None = None  # an arrival rate set through /control wins over the trace
    workers_source: str = "fixed"

    def rate_at(self, t: float) -> float:
        if self.override is not None:
            return self.override
        if not self.trace:
            return self.model.arrival_rate
        if self.loop_seconds:
            t = t % self.loop_seconds
        rate = self.trace[0][1]
        for start, r in self.trace:
            if t >= start:
                rate = r
        return rate


def channel_from_config(c: Mapping[str, Any], seed: int) -> SimChannel:
    """Build one channel from its config entry; errors name the field."""
    for req in ("namespace", "channel", "serviceRate"):
        if req not in c:
            raise ValueError(f"channels[].{req} is required (got keys {sorted(c)})")
    delay = float(c.get("startupDelaySeconds", 0.0))
    model = ChannelModel(
        service_rate=float(c["serviceRate"]),
        service_dist=str(c.get("serviceDist", "exponential")),
        service_cv=float(c.get("serviceCV", 1.0)),
        startup_delay=delay,
        error_rate=float(c.get("errorRate", 0.0)),
        seed=seed,
        start_time=0.0,
        initial_replicas=int(c.get("replicas", 0)),
    )
    trace = [(float(t), float(r)) for t, r in c.get("trace") or []]
    ch = SimChannel(
        namespace=str(c["namespace"]),
        channel=str(c["channel"]),
        model=model,
        deployment=c.get("deployment"),
        trace=sorted(trace),
        loop_seconds=float(c["loopSeconds"]) if c.get("loopSeconds") else None,
    )
    if "arrivalRate" in c:
        model.set_arrival_rate(float(c["arrivalRate"]))
    elif trace:
        model.set_arrival_rate(ch.rate_at(0.0))
    return ch


def _labels(ch: SimChannel) -> str:
    return f'namespace="{ch.namespace}",channel="{ch.channel}"'


def render_metrics(channels: Sequence[SimChannel]) -> str:
    """The metrics contract in Prometheus' text exposition format."""
    out: list[str] = []

    def family(name: str, mtype: str, help_text: str, rows: list[str]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {mtype}")
        out.extend(rows)

    family(
        "chanscale_channel_backlog",
        "gauge",
        "Messages waiting in the channel.",
        [f"chanscale_channel_backlog{{{_labels(c)}}} {c.model.backlog}" for c in channels],
    )
    for metric, attr, help_text in (
        ("chanscale_channel_enqueued_total", "enqueued_total", "Messages that arrived."),
        ("chanscale_channel_processed_total", "processed_total", "Messages completed successfully."),
        ("chanscale_channel_failed_total", "failed_total", "Messages that failed."),
        ("chanscale_channel_busy_seconds_total", "busy_seconds_total", "Worker-seconds spent processing."),
    ):
        family(
            metric,
            "counter",
            help_text,
            [f"{metric}{{{_labels(c)}}} {float(getattr(c.model, attr))!r}" for c in channels],
        )
    rows = []
    for c in channels:
        counts = c.model.latency_bucket_counts
        for le, n in zip([*c.model.buckets, math.inf], counts, strict=True):
            le_s = "+Inf" if math.isinf(le) else repr(le)
            rows.append(f'chanscale_channel_latency_seconds_bucket{{{_labels(c)},le="{le_s}"}} {n}')
        rows.append(f"chanscale_channel_latency_seconds_sum{{{_labels(c)}}} {c.model.latency_sum!r}")
        rows.append(f"chanscale_channel_latency_seconds_count{{{_labels(c)}}} {c.model.latency_count}")
    family("chanscale_channel_latency_seconds", "histogram", "Enqueue-to-done latency.", rows)
    family(
        "chanscale_sim_workers",
        "gauge",
        "Simulated workers that are ready.",
        [f"chanscale_sim_workers{{{_labels(c)}}} {c.model.ready_workers}" for c in channels],
    )
    family(
        "chanscale_sim_arrival_rate",
        "gauge",
        "Configured arrival rate, msgs/s.",
        [f"chanscale_sim_arrival_rate{{{_labels(c)}}} {c.model.arrival_rate!r}" for c in channels],
    )
    return "\n".join(out) + "\n"


class Simulator:
    """Advances every channel in real time and follows its Deployment's replicas."""

    def __init__(self, channels: list[SimChannel], *, replicas_from: str = "spec", kube: bool = False) -> None:
        self.channels = channels
        self.replicas_from = replicas_from
        self.kube = kube
        self.t0 = time.monotonic()
        self.errors: dict[str, str] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def step(self) -> None:
        t = self.now()
        for ch in self.channels:
            ch.model.advance(t)
            rate = ch.rate_at(t)
            if rate != ch.model.arrival_rate:
                ch.model.set_arrival_rate(rate)

    def find(self, namespace: str, channel: str) -> SimChannel | None:
        return next((c for c in self.channels if c.namespace == namespace and c.channel == channel), None)

    def _read_replicas(self) -> dict[tuple[str, str], int | None]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.AppsV1Api()
        out: dict[tuple[str, str], int | None] = {}
        for ch in self.channels:
            if not ch.deployment:
                continue
            key = (ch.namespace, ch.deployment)
            try:
                d = api.read_namespaced_deployment(ch.deployment, ch.namespace)
                if self.replicas_from == "ready":
                    out[key] = int((d.status and d.status.ready_replicas) or 0)
                else:
                    out[key] = int(d.spec.replicas if d.spec.replicas is not None else 1)
                self.errors.pop(f"{key}", None)
            except ApiException as e:
                out[key] = None
                self.errors[f"{key}"] = f"{e.status} {e.reason}"
        return out

    async def follow_replicas(self) -> None:
        while True:
            try:
                replicas = await asyncio.to_thread(self._read_replicas)
            except Exception as e:  # keep serving metrics while the API server is away
                log.warning("reading replicas failed: %s", e)
                replicas = {}
            self.step()
            for ch in self.channels:
                n = replicas.get((ch.namespace, ch.deployment or ""))
                if n is not None and n != ch.model.desired_workers:
                    ch.model.set_replicas(n)
            await asyncio.sleep(0.5)

    def state(self) -> dict[str, Any]:
        return {
            "time": self.now(),
            "channels": [
                {
                    "namespace": c.namespace,
                    "channel": c.channel,
                    "deployment": c.deployment,
                    **{k: v for k, v in c.model.snapshot().items() if not isinstance(v, list)},
                }
                for c in self.channels
            ],
            "errors": self.errors,
        }


async def serve(sim: Simulator, host: str, port: int) -> None:
    from aiohttp import web

    async def metrics(_req: web.Request) -> web.Response:
        sim.step()
        return web.Response(text=render_metrics(sim.channels), content_type="text/plain", charset="utf-8")

    async def state(_req: web.Request) -> web.Response:
        sim.step()
        return web.json_response(sim.state())

    async def control(req: web.Request) -> web.Response:
        try:
            body = await req.json()
            ch = sim.find(str(body["namespace"]), str(body["channel"]))
            if ch is None:
                return web.json_response({"error": "unknown namespace/channel"}, status=404)
            sim.step()
            if "arrivalRate" in body:
                rate = float(body["arrivalRate"])
                if rate < 0 or not math.isfinite(rate):
                    raise ValueError("arrivalRate must be a finite number >= 0")
                ch.override = rate
                ch.model.set_arrival_rate(rate)
            if "replicas" in body and not ch.deployment:
                ch.model.set_replicas(int(body["replicas"]))
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
            return web.json_response({"error": f"bad request: {e}"}, status=400)
        return web.json_response({"ok": True, "arrivalRate": ch.model.arrival_rate})

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/state", state),
            web.post("/control", control),
            web.get("/healthz", healthz),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("simulator serving on http://%s:%d/metrics", host, port)
    tasks = []
    if sim.kube:
        tasks.append(asyncio.create_task(sim.follow_replicas()))
    try:
        while True:
            sim.step()
            await asyncio.sleep(0.25)
    finally:
        for t in tasks:
            t.cancel()
        await runner.cleanup()


def load_channels(path: str, seed: int) -> list[SimChannel]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    entries = doc.get("channels")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'channels' must be a non-empty list")
    return [channel_from_config(c, seed + i) for i, c in enumerate(entries)]


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    channels = load_channels(args.config, args.seed)
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    kube = bool(args.kubeconfig or in_cluster) and any(c.deployment for c in channels)
    if kube:
        from ..kube import load_client_config

        load_client_config(args.kubeconfig)
    host, _, port = args.listen.rpartition(":")
    sim = Simulator(channels, replicas_from=args.replicas_from, kube=kube)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sim, host or "127.0.0.1", int(port)))
    return 0
