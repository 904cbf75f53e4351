"""Prometheus metrics of the service; with several workers, aggregated across processes."""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

DECISIONS = Counter(
    "checkpoint_decisions_total",
    "Verification decisions by outcome and reason code",
    ["outcome", "code"],
)
VERIFY_SECONDS = Histogram(
    "checkpoint_verify_seconds",
    "Time to verify the tokens of one request (core only, no network)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
AUDIT_DROPPED = Counter(
    "checkpoint_audit_dropped_total",
    "Decision audit rows dropped because the queue was full (the registry not taking them)",
)
PERMITS_ISSUED = Counter("checkpoint_permits_issued_total", "Permits issued")
REVOCATION_SEQ = Gauge(
    "checkpoint_revocation_seq",
    "Highest revocation sequence applied by this process",
    multiprocess_mode="max",
)


def render() -> bytes:
    """The metrics page: this process's, or every worker's when running multiprocess."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
