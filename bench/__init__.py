"""havip benchmarks: `python -m bench.failover` prints failover and idle-cost numbers."""
