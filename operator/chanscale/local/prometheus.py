"""A real Prometheus on loopback with a short scrape interval and targets a test can change while it runs.

Targets live in a file_sd JSON file that this class rewrites atomically; Prometheus notices the change through
inotify (1 s refresh as a fallback) without a reload. Prometheus' discovery manager forwards target changes to the
scrapers at most every 5 s (hard-coded in 2.x), so ``add_target``/``remove_target`` take effect after about 5-6 s:
use :meth:`LocalPrometheus.wait_for_target`. A removed target's series get staleness markers, so queries stop
returning them then. To make a signal go *missing* faster, stop the exporter instead: the next failed scrape
(within one interval) marks its series stale. ``honor_labels`` is on by default so an exporter's own ``namespace``
label wins over target labels: one test simulator stands in for workers of many namespaces. A real cluster must
not do that (docs/security.md: any pod could claim another team's namespace); ``honor_labels=False`` makes
Prometheus keep the target's ``namespace`` and rename the exporter's to ``exported_namespace``, as the
Prometheus Operator does.

    with LocalPrometheus() as prom:
        prom.add_target("127.0.0.1:9100", {"namespace": "ns1"})
        prom.wait_for_target("127.0.0.1:9100")
        prom.query("up")
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from chanscale.local.binaries import find_binary
from chanscale.local.process import LOOPBACK, ManagedGroup, ManagedProcess, free_port, wait_until

log = logging.getLogger(__name__)

DEFAULT_JOB = "chanscale-local"


class LocalPrometheus(ManagedGroup):
    """Prometheus with a file_sd job whose targets are edited at run time; see the module docstring."""

    label = "prometheus"

    def __init__(
        self,
        scrape_interval: str = "1s",
        workdir: Path | None = None,
        ready_timeout: float = 60.0,
        extra_scrape_configs: list[dict[str, Any]] | None = None,
        honor_labels: bool = True,
        web_config: dict[str, Any] | None = None,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> None:
        super().__init__()
        # web_config: Prometheus' --web.config.file (TLS, client certificates, basic auth); then pass an ``opener``
        # that can get through it, for this class's own readiness checks and queries.
        self.web_config = web_config
        self._opener = opener or urllib.request.build_opener()
        self.scrape_interval = scrape_interval
        self.honor_labels = honor_labels
        self.ready_timeout = ready_timeout
        self.extra_scrape_configs = extra_scrape_configs or []
        self._owns_workdir = workdir is None
        self.workdir = workdir
        self.port = 0
        # address -> labels, per job
        self._targets: dict[str, dict[str, dict[str, str]]] = {}

    # ------------------------------------------------------------------------------------------ paths
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (what ``--prometheus-url`` takes)."""
        if not self.port:
            raise RuntimeError("prometheus not started")
        scheme = "https" if (self.web_config or {}).get("tls_server_config") else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.dir / "prometheus.yml"

    @property
    def targets_dir(self) -> Path:
        return self.dir / "targets"

    @property
    def process(self) -> ManagedProcess | None:
        return self._procs[0] if self._procs else None

    # -------------------------------------------------------------------------------------- lifecycle
    def start(self) -> LocalPrometheus:
        """Start (or restart after :meth:`stop` with ``cleanup=False``: same port, same data and targets)."""
        super().start()
        log.info("prometheus ready at %s in %.1fs", self.url, self.startup_seconds)
        return self

    def _start(self) -> None:
        binary = find_binary("prometheus")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="chanscale-prom-"))
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        for job in self._targets or {DEFAULT_JOB: {}}:
            self._write_targets(job)
        if not self.port:
            self.port = free_port()
        web_args = []
        if self.web_config is not None:
            web_file = self.dir / "web-config.yml"
            web_file.write_text(yaml.safe_dump(self.web_config, sort_keys=False))
            web_args.append(f"--web.config.file={web_file}")
        argv: list[str | Path] = [binary, *web_args, f"--config.file={self.config_path}"]
        argv += [f"--storage.tsdb.path={self.dir / 'data'}", "--storage.tsdb.retention.time=2h"]
        argv += [f"--web.listen-address={LOOPBACK}:{self.port}", "--web.enable-lifecycle", "--log.level=warn"]
        proc = self._spawn("prometheus", argv, self.dir / "prometheus.log")
        wait_until(lambda: self._get_ok("/-/ready"), self.ready_timeout, "prometheus /-/ready", [proc])

    def stop(self, cleanup: bool = True) -> None:
        """Stop Prometheus. ``cleanup=False`` keeps port, data and targets so :meth:`start` brings it back
        (how tests simulate a Prometheus outage)."""
        if cleanup:
            super().stop()
        else:
            self.stop_processes()

    def _cleanup(self) -> None:
        if self.workdir is not None and self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.port = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def reload(self) -> None:
        """Ask Prometheus to re-read its config (POST /-/reload); only needed after editing scrape configs."""
        self._write_config()
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with self._opener.open(req, timeout=10) as resp:
            resp.read()

    # ---------------------------------------------------------------------------------------- targets
    def add_target(self, address: str, labels: dict[str, str] | None = None, job: str = DEFAULT_JOB) -> None:
        """Scrape ``address`` (host:port, path /metrics) from now on, with optional extra target labels."""
        self._targets.setdefault(job, {})[address] = dict(labels or {})
        self._sync_job(job)

    def remove_target(self, address: str, job: str = DEFAULT_JOB) -> None:
        """Stop scraping ``address``; its series become stale at once."""
        self._targets.get(job, {}).pop(address, None)
        self._sync_job(job)

    def set_targets(self, addresses: dict[str, dict[str, str]] | list[str], job: str = DEFAULT_JOB) -> None:
        """Replace the job's targets wholesale."""
        items = addresses if isinstance(addresses, dict) else {a: {} for a in addresses}
        self._targets[job] = {a: dict(lbl) for a, lbl in items.items()}
        self._sync_job(job)

    def _sync_job(self, job: str) -> None:
        if self.workdir is None:
            return  # written at start()
        known = self._jobs_in_config()
        self._write_targets(job)
        if job not in known and self.running:
            self.reload()  # a new job needs its own scrape config

    def _write_targets(self, job: str) -> None:
        groups = [{"targets": [addr], "labels": labels} for addr, labels in self._targets.get(job, {}).items()]
        path = self.targets_dir / f"{job}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, path)  # atomic: Prometheus never reads a half-written file

    def _jobs_in_config(self) -> set[str]:
        if not self.config_path.exists():
            return set()
        cfg = yaml.safe_load(self.config_path.read_text())
        return {c["job_name"] for c in cfg.get("scrape_configs", [])}

    def _write_config(self) -> None:
        jobs = sorted(set(self._targets) | {DEFAULT_JOB})
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "honor_labels": self.honor_labels,
                    "file_sd_configs": [{"files": [str(self.targets_dir / f"{job}.json")], "refresh_interval": "1s"}],
                }
                for job in jobs
            ]
            + self.extra_scrape_configs,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # ------------------------------------------------------------------------------------------ queries
    def _get_ok(self, path: str) -> bool:
        try:
            with self._opener.open(f"{self.url}{path}", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises on an error status."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        with self._opener.open(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} failed: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the vector result (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_value(self, expr: str) -> float | None:
        """The single sample of an instant query, or None when the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return targets

    def wait_for_target(self, address: str, health: str = "up", timeout: float = 30.0) -> None:
        """Block until ``address`` has been scraped with the given health (``up``/``down``)."""

        def scraped() -> bool:
            return any(t["labels"].get("instance") == address and t["health"] == health for t in self.active_targets())

        what = f"prometheus to scrape {address} with health {health!r}"
        wait_until(scraped, timeout, what, self.processes, interval=0.25)

    def wait_for_series(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Block until ``expr`` returns at least one series; returns it."""
        found: list[list[dict[str, Any]]] = []

        def present() -> bool:
            result = self.query(expr)
            if result:
                found.append(result)
            return bool(result)

        wait_until(present, timeout, f"prometheus query {expr!r} to return data", self.processes, interval=0.25)
        return found[-1]
