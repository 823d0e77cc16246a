"""Tokens shared by the core, logs, metrics, `status --json` and the wire."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a node's failover state machine stands."""

    INIT = "init"  # just started: waiting briefly for the peer before deciding
    STANDBY = "standby"  # does not hold the VIP
    PROBING = "probing"  # wants the VIP and is asking the LAN whether anybody still answers for it
    ACTIVE = "active"  # holds the VIP
    FAULT = "fault"  # the VIP backend failed here; holds nothing, retries later
    STOPPED = "stopped"  # shut down (terminal)


class Reason(StrEnum):
    """Why a transition happened; used as a metric label and in logs."""

    STARTUP = "startup"
    PEER_UP = "peer_up"
    PEER_LOST = "peer_lost"
    PEER_OWNS = "peer_owns"
    PEER_RESIGNED = "peer_resigned"
    PEER_CANDIDATE = "peer_candidate"
    PROBE_SILENT = "probe_silent"
    PROBE_ANSWERED = "probe_answered"
    HIGHER_EPOCH = "higher_epoch"
    PREEMPT = "preempt"
    BACKEND_FAILED = "backend_failed"
    FAULT_CLEARED = "fault_cleared"
    SHUTDOWN = "shutdown"
    INELIGIBLE = "ineligible"  # this node cannot serve the VIP (link down, no witness...)
    CONFLICT = "conflict"  # released after hearing the peer claim the VIP on the LAN
    RESUMED = "resumed"  # a restarted daemon keeps the VIP it still holds
    HANDOVER = "handover"  # the operator asked the owner to hand the VIP to its peer


class LinkDown(StrEnum):
    """Why the peer link counts as down (the failure signal)."""

    DEADLINE_MISSED = "deadline_missed"
    CONNECTION_LOST = "connection_lost"
    PROTOCOL_ERROR = "protocol_error"


class Cause(StrEnum):
    """Why a node is not eligible to hold the VIP (OK: it is)."""

    LINK_DOWN = "link_down"  # the VIP interface is administratively down
    NO_CARRIER = "no_carrier"  # the VIP interface is up but has no carrier
    NO_INTERFACE = "no_interface"  # the VIP interface does not exist
    NO_WITNESS = "no_witness"  # witnesses are configured and none answers
    CHECK_FAILED = "check_failed"  # a health check fails (or has not passed yet)
    MAINTENANCE = "maintenance"  # the operator drained this node (`havip maintenance on`)
    OK = "ok"
