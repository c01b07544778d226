"""Host and app-process metrics via psutil, read on scrape without subprocesses.

``psutil.Process`` objects are cached (psutil keeps the previous CPU times on them),
and finding the app by *name* scans the process table at most every
:data:`NAME_RESCAN_S` seconds, so a once-a-second scrape stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fleetwave_agent.config import ProcessMatch

NAME_RESCAN_S = 10.0


class ProcessFinder:
    """Finds the app's process from a pid file or a process name; caches the result."""

    def __init__(self, match: ProcessMatch, clock: Callable[[], float] = time.monotonic) -> None:
        self.match = match
        self.clock = clock
        self._proc: psutil.Process | None = None
        self._last_scan = float("-inf")

    def find(self) -> psutil.Process | None:
        if self.match.pid_file is not None:
            return self._from_pid_file(self.match.pid_file)
        if self._proc is not None and self._alive(self._proc):
            return self._proc
        self._proc = None
        now = self.clock()
        if now - self._last_scan < NAME_RESCAN_S:
            return None
        self._last_scan = now
        for proc in psutil.process_iter(["name"]):
            if proc.info.get("name") == self.match.name:
                self._proc = proc
                break
        return self._proc

    def _from_pid_file(self, path: Path) -> psutil.Process | None:
        try:
            pid = int(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._alive(self._proc):
            return self._proc
        try:
            self._proc = psutil.Process(pid)
        except psutil.Error:
            self._proc = None
        return self._proc

    @staticmethod
    def _alive(proc: psutil.Process) -> bool:
        try:
            # is_running() also compares the create time, so a reused pid is not "alive".
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


class HostCollector:
    """CPU, memory, the release volume, and the app process's RSS and CPU time."""

    def __init__(self, volume: Path, process: ProcessMatch | None) -> None:
        self.volume = volume
        self.finder = ProcessFinder(process) if process is not None else None
        psutil.cpu_percent(interval=None)  # prime: the first call has no baseline

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "fleetwave_agent_host_cpu_usage_ratio",
            "Share of all CPUs busy since the previous scrape (0-1).",
            value=psutil.cpu_percent(interval=None) / 100.0,
        )
        mem = psutil.virtual_memory()
        yield GaugeMetricFamily(
            "fleetwave_agent_host_memory_total_bytes", "Physical memory.", value=mem.total
        )
        yield GaugeMetricFamily(
            "fleetwave_agent_host_memory_available_bytes",
            "Memory available to new processes without swapping.",
            value=mem.available,
        )
        size = GaugeMetricFamily(
            "fleetwave_agent_volume_size_bytes",
            "Size of the file system holding the agent root.",
            labels=["path"],
        )
        free = GaugeMetricFamily(
            "fleetwave_agent_volume_free_bytes",
            "Free bytes (for unprivileged users) on the agent root's file system.",
            labels=["path"],
        )
        try:
            disk = psutil.disk_usage(str(self.volume))
            size.add_metric([str(self.volume)], disk.total)
            free.add_metric([str(self.volume)], disk.free)
        except OSError:
            pass
        yield size
        yield free
        if self.finder is not None:
            yield from self._app()

    def _app(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("fleetwave_agent_app_up", "1 if the app's process was found.")
        proc = self.finder.find() if self.finder else None
        rss = cpu = None
        if proc is not None:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu = times.user + times.system
            except psutil.Error:
                rss = cpu = None
        up.add_metric([], 1.0 if rss is not None else 0.0)
        yield up
        if rss is not None and cpu is not None:
            yield GaugeMetricFamily(
                "fleetwave_agent_app_resident_memory_bytes",
                "Resident memory of the app's process.",
                value=rss,
            )
            yield CounterMetricFamily(
                "fleetwave_agent_app_cpu_seconds",
                "CPU time (user + system) the app's process has used.",
                value=cpu,
            )
