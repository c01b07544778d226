"""Helpers of ``bench/bench_deploy.py``: the bench fleet, the peer workloads, the
fleetwave worker and the result tables."""
