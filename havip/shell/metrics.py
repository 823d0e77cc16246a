"""Prometheus metrics: one `Metrics` object per daemon, each with its own registry.

Every known label combination is created at 0 up front, so a dashboard or an alert sees
the series before the first event. Label values outside the known sets are still counted
(under their own label), never rejected: a metrics call must not take the daemon down.

The registry also holds prometheus_client's process and platform collectors (`process_*`,
`python_info`) and never exposes `_created` samples. The README's "Metrics" table documents
every metric; tests/test_metrics.py checks the two against each other.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from havip.backends.base import BackendOp
from havip.core.failover import TRANSITIONS
from havip.core.wire import ErrorKind
from havip.shell.certinfo import CertInfo
from havip.shell.transport import RejectReason

# Text format 0.0.4: what prometheus_client itself serves when the scraper states no
# preference, and what every Prometheus version parses (all our names are legacy-valid).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# LAN round trips: 100 µs to 1 s.
RTT_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# From the failure signal to the VIP up and announced: a dead time plus probes, well under 1 s
# with the default timing; seconds when a fence hook runs first.
TAKEOVER_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class ProbeResult(StrEnum):
    """Outcome of one ARP probe round (`havip_arp_probes_total{result}`)."""

    ANSWERED = "answered"  # somebody answers for the VIP
    SILENT = "silent"  # nobody answers for it, and a witness (if any) did
    DEAF = "deaf"  # nobody answered, not even a witness: this node may be cut off
    ERROR = "error"  # the probe could not be sent


class ConflictKind(StrEnum):
    """Who else claimed our VIP (`havip_vip_conflicts_total{kind}`)."""

    PEER = "peer"
    FOREIGN = "foreign"


VERDICTS = ("keep", "yield")  # havip.core.failover.Verdict values
RUN_OUTCOMES = ("ok", "failed", "timeout", "error")  # havip.shell.command.CommandResult.outcome
HOOKS = ("notify", "notify_active", "notify_standby", "notify_fault", "notify_stopped", "fence")
OPERATOR_COMMANDS = ("handover", "maintenance_on", "maintenance_off", "reload")
OPERATOR_RESULTS = ("ok", "refused", "failed")
RELOAD_RESULTS = ("ok", "refused")
CERT_ROLES = ("own", "peer", "ca")  # havip_x509_cert_*{role}
CERT_LABELS = ("role", "subject_CN", "issuer_CN", "serial_number")  # x509-certificate-exporter's
# Every (from, to, reason) the failover machine allows: havip_transitions_total starts with these.
TRANSITION_LABELS: tuple[tuple[str, str, str], ...] = tuple(
    sorted(
        (str(frm), str(to), str(reason))
        for (frm, to), reasons in TRANSITIONS.items()
        for reason in reasons
    )
)


def vip_label(address: object) -> str:
    """The `vip` label of an address: bare, without a prefix length ("198.18.0.100")."""
    text = str(address)
    if "/" not in text:
        return text
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        return text.partition("/")[0]  # not an address: keep the label readable anyway


class _Registry(CollectorRegistry):
    """A registry that never exposes `_created` samples.

    They would be a third of the series (one per counter and histogram child), and no rule or
    dashboard reads them. prometheus_client's `disable_created_metrics()` is process-wide;
    filtering here keeps other registries in the process as they are. Both ways of collecting
    (everything, or `?name[]=` through `restricted_registry`) are filtered.
    """

    def collect(self) -> Iterator[Metric]:
        return _without_created(super().collect())

    def restricted_registry(self, names: Iterable[str]) -> _Restricted:  # type: ignore[override]
        return _Restricted(super().restricted_registry(names))


class _Restricted:
    def __init__(self, inner: object) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        return _without_created(self._inner.collect())  # type: ignore[attr-defined]


_HAS_CREATED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def _without_created(families: Iterable[Metric]) -> Iterator[Metric]:
    for family in families:
        if family.type in _HAS_CREATED:
            created = (family.name + "_created", family.name + "_gcreated")
            family = copy.copy(family)
            family.samples = [s for s in family.samples if s.name not in created]
        yield family


class _OneHot(Collector):
    """A gauge family with one series per value, exactly one of them (or none) at 1.

    A collector rather than a Gauge, so that a scrape (possibly from another thread) reads
    the selection in one step: never two series at 1, nor none, halfway through a change.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._known: dict[str, None] = dict.fromkeys(str(v) for v in values)
        self._current: str | None = None
        self._lock = threading.Lock()
        registry.register(self)

    def select(self, value: str | None) -> None:
        # Called for every keepalive: cheap, and a no-op when nothing changes.
        value = None if value is None else str(value)
        with self._lock:
            if value is not None and value not in self._known:
                self._known[value] = None
            self._current = value

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            known, current = list(self._known), self._current
        family = GaugeMetricFamily(self._name, self._documentation, labels=[self._label])
        for value in known:
            family.add_metric([value], 1.0 if value == current else 0.0)
        return [family]


class Metrics:
    """All of havip's metrics, registered in a private `CollectorRegistry`.

    `vips` are (address, interface) pairs; an address may carry its prefix length
    ("198.18.0.100/24"): the `vip` label is always the bare address (`vip_label`).
    """

    def __init__(
        self,
        *,
        node: str,
        peer: str,
        vips: Iterable[tuple[object, str]],
        states: Sequence[str],
        reasons: Sequence[str],
        version: str,
        causes: Sequence[str] = (),
    ) -> None:
        self.registry: CollectorRegistry = _Registry(auto_describe=True)
        reg = self.registry
        vip_pairs = [(vip_label(address), str(interface)) for address, interface in vips]
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        # Transitions are created lazily; kept for documentation of the known reason codes.
        self.reasons: tuple[str, ...] = tuple(str(r) for r in reasons)

        self._build_info = Info(
            "havip_build", "Version of havip and the two nodes it is configured for.", registry=reg
        )
        self._build_info.info({"version": version, "node": node, "peer": peer})

        self._state = _OneHot(
            "havip_state",
            "Failover state of this node: 1 on the current state, 0 on the others.",
            "state",
            states,
            registry=reg,
        )
        self._vip_owned = Gauge(
            "havip_vip_owned",
            "1 if this node holds the VIP on its interface, else 0.",
            ["vip", "interface"],
            registry=reg,
        )
        for vip, interface in vip_pairs:
            self._vip_owned.labels(vip, interface).set(0)

        self._peer_connected = Gauge(
            "havip_peer_connected",
            "1 while an authenticated connection to the peer is up, else 0.",
            registry=reg,
        )
        self._peer_state = _OneHot(
            "havip_peer_state",
            "State the peer last reported: 1 on that state; all 0 when unknown.",
            "state",
            states,
            registry=reg,
        )
        self._epoch = Gauge(
            "havip_epoch", "Ownership epoch this node currently knows.", registry=reg
        )

        self._ka_sent = Counter(
            "havip_keepalives_sent", "Keepalive messages sent to the peer.", registry=reg
        )
        self._ka_received = Counter(
            "havip_keepalives_received", "Keepalive messages received from the peer.", registry=reg
        )
        self._ka_missed = Counter(
            "havip_keepalives_missed",
            "Times the keepalive deadline passed without one from the peer.",
            registry=reg,
        )
        self._rtt = Histogram(
            "havip_keepalive_rtt_seconds",
            "Keepalive round-trip time to the peer, measured on this node's clock.",
            buckets=RTT_BUCKETS,
            registry=reg,
        )
        self._ka_source: Callable[[], float | None] = lambda: None
        self._ka_age = Gauge(
            "havip_peer_last_keepalive_age_seconds",
            "Seconds since the last keepalive (or HELLO) from the peer; NaN before the first.",
            registry=reg,
        )
        self._ka_age.set_function(self._keepalive_age)
        self._takeover = Histogram(
            "havip_takeover_duration_seconds",
            "Failovers: from the failure signal to the VIP up and announced on this node.",
            buckets=TAKEOVER_BUCKETS,
            registry=reg,
        )

        self._transitions = Counter(
            "havip_transitions",
            "Failover state transitions of this node, by from, to and reason code.",
            ["from", "to", "reason"],
            registry=reg,
        )
        for labels in TRANSITION_LABELS:
            self._transitions.labels(*labels)
        self._last_transition = Gauge(
            "havip_last_transition_timestamp_seconds",
            "Wall-clock time (Unix seconds) of this node's last state transition; 0 if none.",
            registry=reg,
        )

        self._peer_connections = Counter(
            "havip_peer_connections",
            "Authenticated peer connections established (either direction).",
            registry=reg,
        )
        self._peer_rejected = Counter(
            "havip_peer_rejected",
            "Peer connections refused before authentication completed, by reason.",
            ["reason"],
            registry=reg,
        )
        _precreate(self._peer_rejected, RejectReason)

        self._protocol_errors = Counter(
            "havip_protocol_errors",
            "Peer connections closed for a protocol error, by kind.",
            ["kind"],
            registry=reg,
        )
        _precreate(self._protocol_errors, ErrorKind)

        self._arp_probes = Counter(
            "havip_arp_probes",
            "ARP probe rounds for a VIP before a takeover, by whether anything answered.",
            ["result"],
            registry=reg,
        )
        _precreate(self._arp_probes, ProbeResult)

        self._vetoed = Counter(
            "havip_takeovers_vetoed",
            "Takeovers not done because the VIP still answered on the LAN.",
            ["vip", "interface"],
            registry=reg,
        )
        for vip, interface in vip_pairs:
            self._vetoed.labels(vip, interface)

        self._backend_errors = Counter(
            "havip_backend_errors",
            "Failed VIP backend operations, by operation.",
            ["op"],
            registry=reg,
        )
        _precreate(self._backend_errors, BackendOp)

        self._garp_sent = Counter(
            "havip_gratuitous_arp_sent",
            "Gratuitous ARP packets sent (request and reply forms each count).",
            registry=reg,
        )

        self._eligible = Gauge(
            "havip_eligible",
            "1 if this node may hold the VIP (links up, a witness heard, checks pass, no "
            "maintenance), else 0.",
            registry=reg,
        )
        self._eligible.set(1)
        self._ineligible_cause = _OneHot(
            "havip_ineligible_cause",
            "Why this node is not eligible: 1 on the cause; all 0 while eligible.",
            "cause",
            causes,
            registry=reg,
        )
        self._peer_eligible = Gauge(
            "havip_peer_eligible",
            "1 if the peer last said it is eligible, 0 if not or unknown.",
            registry=reg,
        )
        self._isolated = Gauge(
            "havip_isolated",
            "1 while this node's probes hear no witness: it cannot tell silence from deafness.",
            registry=reg,
        )
        self._conflicts = Counter(
            "havip_vip_conflicts",
            "Frames from another MAC claiming our VIP while we held it, by who and what we did.",
            ["kind", "verdict"],
            registry=reg,
        )
        for kind in ConflictKind:
            for verdict in VERDICTS:
                self._conflicts.labels(kind.value, verdict)
        self._http_refused = Counter(
            "havip_http_connections_refused",
            "HTTP connections closed at once because too many were open.",
            registry=reg,
        )
        self._metrics_bind_errors = Counter(
            "havip_metrics_listen_errors",
            "Failed attempts to bind the metrics port (busy or forbidden); retried.",
            registry=reg,
        )

        # Health checks: label sets follow the config (`set_checks`).
        self._checks: list[str] = []
        self._check_passing = Gauge(
            "havip_check_passing",
            "1 while the health check passes (after rise/fall hysteresis), else 0.",
            ["check"],
            registry=reg,
        )
        self._check_last_ok = Gauge(
            "havip_check_last_ok",
            "1 if the health check's last run succeeded, else 0 (raw, before hysteresis).",
            ["check"],
            registry=reg,
        )
        self._check_duration = Gauge(
            "havip_check_duration_seconds",
            "How long the health check's last run took.",
            ["check"],
            registry=reg,
        )
        self._check_failures = Gauge(
            "havip_check_consecutive_failures",
            "Failed runs of the health check in a row (0 after a success).",
            ["check"],
            registry=reg,
        )
        self._check_runs = Counter(
            "havip_check_runs",
            "Runs of each health check, by outcome (ok, failed, timeout, error).",
            ["check", "outcome"],
            registry=reg,
        )

        # Hooks.
        self._hook_runs = Counter(
            "havip_hook_runs",
            "Notify and fence hook runs, by hook and outcome (ok, failed, timeout, error).",
            ["hook", "outcome"],
            registry=reg,
        )
        for hook in HOOKS:
            for outcome in RUN_OUTCOMES:
                self._hook_runs.labels(hook, outcome)
        self._hook_duration = Gauge(
            "havip_hook_duration_seconds",
            "How long the hook's last run took.",
            ["hook"],
            registry=reg,
        )
        for hook in HOOKS:
            self._hook_duration.labels(hook).set(0)
        self._hooks_dropped = Counter(
            "havip_hooks_dropped",
            "Notify hooks dropped unrun because too many were waiting.",
            registry=reg,
        )

        # Operations.
        self._maintenance = Gauge(
            "havip_maintenance",
            "1 while this node is in maintenance (never claims the VIP), else 0.",
            registry=reg,
        )
        self._operator_commands = Counter(
            "havip_operator_commands",
            "Operator commands received on the control socket, by command and result.",
            ["command", "result"],
            registry=reg,
        )
        for command in OPERATOR_COMMANDS:
            for result in OPERATOR_RESULTS:
                self._operator_commands.labels(command, result)
        self._reloads = Counter(
            "havip_config_reloads",
            "Configuration reloads, by result (ok; refused: the new config was invalid).",
            ["result"],
            registry=reg,
        )
        _precreate(self._reloads, RELOAD_RESULTS)
        self._last_reload_ok = Gauge(
            "havip_config_last_reload_success_timestamp_seconds",
            "Wall-clock time (Unix seconds) of the last successful reload; 0 if none.",
            registry=reg,
        )

        # Certificates: series appear once a role's certificate is known (`set_certificates`).
        self._cert_not_after = Gauge(
            "havip_x509_cert_not_after",
            "Certificate expiry (Unix seconds), by role: own, peer (as last seen), ca.",
            list(CERT_LABELS),
            registry=reg,
        )
        self._cert_not_before = Gauge(
            "havip_x509_cert_not_before",
            "Certificate start of validity (Unix seconds), by role: own, peer, ca.",
            list(CERT_LABELS),
            registry=reg,
        )
        self._certs: dict[str, list[tuple[str, str, str, str]]] = {}
        self._certs_lock = threading.Lock()

    # -- gauges -----------------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        """Make `state` this node's one current state."""
        self._state.select(state)

    def set_vip_owned(self, vip: object, interface: str, owned: bool) -> None:
        """Whether this node holds `vip` (an address, with or without prefix) on `interface`."""
        self._vip_owned.labels(vip_label(vip), str(interface)).set(1 if owned else 0)

    def set_peer_connected(self, up: bool) -> None:
        self._peer_connected.set(1 if up else 0)

    def set_peer_state(self, state: str | None) -> None:
        """Record what the peer last reported; None (unknown, disconnected) clears all."""
        self._peer_state.select(state)

    def set_epoch(self, n: int) -> None:
        self._epoch.set(n)

    def set_eligible(self, eligible: bool, cause: str | None) -> None:
        """This node's eligibility; `cause` names why not (ignored while eligible)."""
        self._eligible.set(1 if eligible else 0)
        self._ineligible_cause.select(None if eligible else cause)

    def set_peer_eligible(self, eligible: bool | None) -> None:
        self._peer_eligible.set(1 if eligible else 0)

    def set_isolated(self, isolated: bool) -> None:
        self._isolated.set(1 if isolated else 0)

    # -- keepalives -------------------------------------------------------------------------

    def keepalive_sent(self) -> None:
        self._ka_sent.inc()

    def keepalive_received(self) -> None:
        self._ka_received.inc()

    def keepalive_missed(self) -> None:
        self._ka_missed.inc()

    def observe_rtt(self, seconds: float) -> None:
        self._rtt.observe(seconds)

    def peer_keepalive_source(self, fn: Callable[[], float | None]) -> None:
        """`fn` gives the age in seconds of the peer's last keepalive, or None if none came
        yet (exposed as NaN). Called at every scrape, possibly from another thread."""
        self._ka_source = fn

    def _keepalive_age(self) -> float:
        try:
            age = self._ka_source()
        except Exception:  # a scrape must not fail for one gauge: NaN says "unknown"
            return math.nan
        return math.nan if age is None else float(age)

    def observe_takeover(self, seconds: float) -> None:
        """One failover: seconds from the failure signal to the VIP up and announced."""
        self._takeover.observe(seconds)

    # -- events -----------------------------------------------------------------------------

    def transition(self, frm: str, to: str, reason: str, *, now: float | None = None) -> None:
        """Count a transition and stamp its wall-clock time (`now`, default time.time())."""
        self._transitions.labels(str(frm), str(to), str(reason)).inc()
        self._last_transition.set(time.time() if now is None else now)

    def peer_connected_event(self) -> None:
        """An authenticated peer connection was established."""
        self._peer_connections.inc()

    def peer_rejected(self, reason: str) -> None:
        self._peer_rejected.labels(str(reason)).inc()

    def protocol_error(self, kind: str) -> None:
        self._protocol_errors.labels(str(kind)).inc()

    def arp_probe(self, result: ProbeResult) -> None:
        self._arp_probes.labels(result.value).inc()

    def conflict(self, kind: ConflictKind, verdict: str) -> None:
        self._conflicts.labels(kind.value, str(verdict)).inc()

    def http_refused(self) -> None:
        self._http_refused.inc()

    def metrics_bind_error(self) -> None:
        self._metrics_bind_errors.inc()

    def takeover_vetoed(self, vip: object, interface: str) -> None:
        """A takeover of `vip` on `interface` was not done: the VIP still answered."""
        self._vetoed.labels(vip_label(vip), str(interface)).inc()

    def backend_error(self, op: str) -> None:
        self._backend_errors.labels(str(op)).inc()

    def garp_sent(self, n: int) -> None:
        """Count `n` gratuitous ARP packets; n <= 0 counts nothing (a counter only rises)."""
        if n > 0:
            self._garp_sent.inc(n)

    # -- health checks and hooks ------------------------------------------------------------

    def set_checks(self, names: Sequence[str]) -> None:
        """The configured checks are now `names`: new ones start at 0, removed ones go away."""
        wanted = [str(n) for n in dict.fromkeys(names)]
        for name in self._checks:
            if name not in wanted:
                for gauge in self._check_gauges():
                    gauge.remove(name)
                for outcome in RUN_OUTCOMES:
                    self._check_runs.remove(name, outcome)
        for name in wanted:
            if name not in self._checks:
                for gauge in self._check_gauges():
                    gauge.labels(name).set(0)
                for outcome in RUN_OUTCOMES:
                    self._check_runs.labels(name, outcome)
        self._checks = wanted

    def _check_gauges(self) -> tuple[Gauge, ...]:
        return (
            self._check_passing,
            self._check_last_ok,
            self._check_duration,
            self._check_failures,
        )

    def check_run(
        self,
        check: str,
        *,
        outcome: str,
        duration: float,
        passing: bool,
        consecutive_failures: int,
    ) -> None:
        """One run of `check` ended with `outcome` ("ok" is a success); its state after it."""
        check = str(check)
        self._check_runs.labels(check, str(outcome)).inc()
        self._check_last_ok.labels(check).set(1 if outcome == "ok" else 0)
        self._check_duration.labels(check).set(duration)
        self._check_passing.labels(check).set(1 if passing else 0)
        self._check_failures.labels(check).set(consecutive_failures)

    def hook_run(self, hook: str, outcome: str, duration: float) -> None:
        """One run of a notify or fence hook ended with `outcome`."""
        self._hook_runs.labels(str(hook), str(outcome)).inc()
        self._hook_duration.labels(str(hook)).set(duration)

    def hook_dropped(self) -> None:
        self._hooks_dropped.inc()

    # -- operations ---------------------------------------------------------------------------

    def set_maintenance(self, on: bool) -> None:
        self._maintenance.set(1 if on else 0)

    def operator_command(self, command: str, result: str) -> None:
        """Count one operator command (handover, maintenance_on...) and its result."""
        self._operator_commands.labels(str(command), str(result)).inc()

    def config_reloaded(self, ok: bool, *, now: float | None = None) -> None:
        """Count a reload; a successful one is stamped (`now`, default time.time())."""
        self._reloads.labels("ok" if ok else "refused").inc()
        if ok:
            self._last_reload_ok.set(time.time() if now is None else now)

    # -- certificates ---------------------------------------------------------------------------

    def set_certificates(self, role: str, cert: CertInfo | Iterable[CertInfo] | None) -> None:
        """The certificate(s) now in use for `role` (own, peer, ca: a CA file may hold several);
        they replace the role's earlier series. None removes the role's series."""
        if cert is None:
            certs: list[CertInfo] = []
        elif isinstance(cert, CertInfo):
            certs = [cert]
        else:
            certs = list(cert)
        role = str(role)
        with self._certs_lock:
            for labels in self._certs.pop(role, []):
                self._cert_not_after.remove(*labels)
                self._cert_not_before.remove(*labels)
            added: dict[tuple[str, str, str, str], None] = {}  # a bundle may repeat one
            for c in certs:
                labels = (role, c.subject_cn, c.issuer_cn, str(c.serial_number))
                self._cert_not_after.labels(*labels).set(c.not_after_timestamp)
                self._cert_not_before.labels(*labels).set(c.not_before_timestamp)
                added[labels] = None
            if added:
                self._certs[role] = list(added)

    # -- exposition -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (serve with `CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _precreate(counter: Counter, values: Iterable[str]) -> None:
    for value in values:
        counter.labels(str(value))
