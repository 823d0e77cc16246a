"""The pure core: wire format, peer session and failover state machine. No I/O, no clock."""
