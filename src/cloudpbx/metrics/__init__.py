"""What `/metrics` shows (docs/operations.md#metrics).

Hot paths never call Prometheus: components keep plain counters and states, and a
sampler task (`sampler.py`) copies them into the Prometheus metrics about once a second.
That also works with several server processes, where each process writes its own values
to `PROMETHEUS_MULTIPROC_DIR` and a scrape of any process adds them up (`registry.py`).
"""
