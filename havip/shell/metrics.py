"""Prometheus metrics: one `Metrics` object per daemon, each with its own registry.

Every known label combination is created at 0 up front, so a dashboard or an alert sees
the series before the first event. Label values outside the known sets are still counted
(under their own label), never rejected: a metrics call must not take the daemon down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from havip.backends.base import BackendOp
from havip.core.wire import ErrorKind
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


class _OneHot:
    """A gauge with one series per value, exactly one of them (or none) at 1."""

    def __init__(self, gauge: Gauge, values: Iterable[str]) -> None:
        self._gauge = gauge
        self._known: list[str] = []
        self._current: str | None = None
        self._lock = threading.Lock()
        for value in values:
            self._add(str(value))

    def _add(self, value: str) -> None:
        if value not in self._known:
            self._known.append(value)
            self._gauge.labels(value).set(0)

    def select(self, value: str | None) -> None:
        # Called for every keepalive: touch only the two series that change, and only on change.
        # The lock keeps a concurrent pair of calls from leaving two series at 1.
        with self._lock:
            value = None if value is None else str(value)
            if value == self._current:
                return
            if value is not None:
                self._add(value)
                self._gauge.labels(value).set(1)
            if self._current is not None:
                self._gauge.labels(self._current).set(0)
            self._current = value


class Metrics:
    """All of havip's metrics, registered in a private `CollectorRegistry`."""

    def __init__(
        self,
        *,
        node: str,
        peer: str,
        vips: Sequence[str],
        states: Sequence[str],
        reasons: Sequence[str],
        version: str,
        causes: Sequence[str] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        # Transitions are created lazily; kept for documentation of the known reason codes.
        self.reasons: tuple[str, ...] = tuple(str(r) for r in reasons)

        self._build_info = Info(
            "havip_build", "Version of havip and the two nodes it is configured for.", registry=reg
        )
        self._build_info.info({"version": version, "node": node, "peer": peer})

        self._state = _OneHot(
            Gauge(
                "havip_state",
                "Failover state of this node: 1 on the current state, 0 on the others.",
                ["state"],
                registry=reg,
            ),
            states,
        )
        self._vip_owned = Gauge(
            "havip_vip_owned",
            "1 if this node holds the VIP on its interface, else 0.",
            ["vip"],
            registry=reg,
        )
        for vip in vips:
            self._vip_owned.labels(str(vip)).set(0)

        self._peer_connected = Gauge(
            "havip_peer_connected",
            "1 while an authenticated connection to the peer is up, else 0.",
            registry=reg,
        )
        self._peer_state = _OneHot(
            Gauge(
                "havip_peer_state",
                "State the peer last reported: 1 on that state; all 0 when unknown.",
                ["state"],
                registry=reg,
            ),
            states,
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

        self._transitions = Counter(
            "havip_transitions",
            "Failover state transitions of this node, by from, to and reason code.",
            ["from", "to", "reason"],
            registry=reg,
        )
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
            ["vip"],
            registry=reg,
        )
        _precreate(self._vetoed, vips)

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
            "1 if this node may hold the VIP (VIP links up, a witness heard), else 0.",
            registry=reg,
        )
        self._eligible.set(1)
        self._ineligible_cause = _OneHot(
            Gauge(
                "havip_ineligible_cause",
                "Why this node is not eligible: 1 on the cause; all 0 while eligible.",
                ["cause"],
                registry=reg,
            ),
            causes,
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

    # -- gauges -----------------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        """Make `state` this node's one current state."""
        self._state.select(state)

    def set_vip_owned(self, vip: str, owned: bool) -> None:
        self._vip_owned.labels(str(vip)).set(1 if owned else 0)

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

    def takeover_vetoed(self, vip: str) -> None:
        self._vetoed.labels(str(vip)).inc()

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

    # -- exposition -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (serve with `CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _precreate(counter: Counter, values: Iterable[str]) -> None:
    for value in values:
        counter.labels(str(value))
