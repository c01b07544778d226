"""A real Prometheus in the root namespace scraping targets given through
``file_sd_configs``, with a bounded-wait helper for its HTTP query API."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._proc import LabError, free_port, log_tail, stop_process, wait_until


class LabPrometheus:
    """``prometheus`` scraping every second; targets are set with :meth:`set_targets`."""

    def __init__(self, work_dir: Path, *, scrape_interval: str = "1s"):
        self.work_dir = work_dir
        self.port = free_port()
        self.config_path = work_dir / "prometheus.yml"
        self.targets_dir = work_dir / "targets"
        self.log_path = work_dir / "prometheus.log"
        self._interval = scrape_interval
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 30.0) -> None:
        """Start Prometheus and wait until ``/-/ready`` answers."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        # honor_labels: our target labels (host, job) must not be renamed exported_*.
        self.config_path.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": self._interval,
                        "evaluation_interval": self._interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "lab",
                            "honor_labels": True,
                            "file_sd_configs": [
                                {
                                    "files": [str(self.targets_dir / "*.json")],
                                    "refresh_interval": "1s",
                                }
                            ],
                        }
                    ],
                }
            )
        )
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise LabError(f"prometheus exited: {log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(ready, timeout=timeout, what="prometheus /-/ready", interval=0.2)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None

    def __enter__(self) -> LabPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_targets(
        self, group: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace target group ``group`` (``host:port`` strings with common labels);
        written atomically so Prometheus never reads half a file."""
        path = self.targets_dir / f"{group}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": dict(labels or {})}]))
        os.replace(tmp, path)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; returns the ``result`` vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise LabError(f"prometheus query {promql!r}: HTTP {exc.code}") from None
        if body.get("status") != "success":
            raise LabError(f"prometheus query {promql!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Query until ``predicate(result)`` holds (default: non-empty), bounded."""
        last: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal last
            last = self.query(promql)
            return predicate(last)

        try:
            wait_until(check, timeout=timeout, what=f"prometheus {promql!r}", interval=0.5)
        except LabError as exc:
            raise LabError(f"{exc}; last result: {last}") from None
        return last
