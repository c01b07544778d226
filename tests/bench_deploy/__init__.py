"""Unit tests of bench/bench_deploy.py and its helpers (no hosts needed)."""
