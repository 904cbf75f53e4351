"""Prometheus metrics of the service; with several workers, aggregated across processes."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from issuer.border import DEPARTED, STAY_TOO_LONG
from issuer.issuing import PROGRAMME_REPLACED
from issuer.store.revocations import COMPANION_WITHDRAWN

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
SERVICE_REASONS = frozenset(
    {"amended", "no_arrival", DEPARTED, STAY_TOO_LONG, PROGRAMME_REPLACED, COMPANION_WITHDRAWN}
)
"""Withdrawal reasons the service writes itself; an admin's reason is free text."""

HTTP_REQUESTS = Counter(
    "checkpoint_http_requests_total",
    "HTTP requests answered, by method, route (its path template) and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "checkpoint_http_request_seconds",
    "Time from a request's arrival to the end of its answer, by method and route",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PROBLEMS = Counter(
    "checkpoint_problems_total",
    "HTTP refusals (problem+json answers) by status and code; 429 rate_limited among them",
    ["status", "code"],
)
AUTH_FAILURES = Counter(
    "checkpoint_auth_failures_total",
    "Requests answered 401 for their API key, by reason: missing (no Authorization header), "
    "malformed, unknown (an unknown or disabled key)",
    ["reason"],
)
AUTH_LIMITED = Counter(
    "checkpoint_auth_limited_total",
    "Requests answered 429 before any registry read: their client address had used up its "
    "budget of failed authentications",
)
AUTH_LIMITED_ADDRESSES = Counter(
    "checkpoint_auth_limited_addresses_total",
    "Failed authentications that left their client address with no failure to spend (it is "
    "limited until it earns one back)",
)
DECISION_WARNINGS = Counter(
    "checkpoint_decision_warnings_total",
    "Warnings on decisions by code: anti-passback's duplicate_entry (soft categories) and "
    "duplicate_check_unavailable",
    ["code"],
)
REVOCATIONS = Counter(
    "checkpoint_revocations_total",
    "Permits this process withdrew (revoked, superseded, cancelled), by reason",
    ["reason"],
)
REVOCATION_AGE = Gauge(
    "checkpoint_revocation_age_seconds",
    "Seconds since the revocation mirror was last confirmed complete (the worst worker); "
    "decisions turn INDETERMINATE past the policy's revocation_staleness",
    multiprocess_mode="max",
)
BUILD_INFO = Gauge(
    "checkpoint_build_info",
    "The running build: always 1, its labels say which",
    ["version", "python", "policy_version"],
    multiprocess_mode="max",
)

DECISIONS = Counter(
    "checkpoint_decisions_total",
    "Verification decisions by outcome and reason code",
    ["outcome", "code"],
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted under their own name; any other a client sends counts as `other`, so a
client cannot make a new series per request."""


# The labelled children, looked up once per label set: `labels()` takes a lock and builds
# its key on every call, which was several microseconds of every scan. The label sets are
# bounded (methods above, route templates, statuses, outcomes and reason codes).
@functools.cache
def _http(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_SECONDS.labels(method, route)


@functools.cache
def decision(outcome: str, code: str) -> Counter:
    """The counter of decisions with this outcome and code."""
    return DECISIONS.labels(outcome, code)


@functools.cache
def decision_warning(code: str) -> Counter:
    """The counter of decisions carrying this warning."""
    return DECISION_WARNINGS.labels(code)


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count and time one answered HTTP request."""
    counter, histogram = _http(method if method in HTTP_METHODS else "other", route, status)
    counter.inc()
    histogram.observe(seconds)


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

WEBHOOK_DELIVERIES = Counter(
    "checkpoint_webhook_deliveries_total",
    "Webhook deliveries (POSTs of up to 100 events) by outcome: delivered or failed",
    ["outcome"],
)


def revocation_reason(reason: str) -> str:
    """The label of a withdrawal's reason: the service's own reasons as they are, `admin`
    for the free text an admin gave (one label, not one per text)."""
    return reason if reason in SERVICE_REASONS else "admin"


def record_build(policy_version: str) -> None:
    """Set `checkpoint_build_info` for this process (at start-up)."""
    BUILD_INFO.labels(
        importlib.metadata.version("checkpoint"), platform.python_version(), policy_version
    ).set(1)


def render() -> bytes:
    """The metrics page: this process's, or every worker's when running multiprocess."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
