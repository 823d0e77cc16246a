"""The asyncio shell around the core: daemon, TLS transport, metrics, HTTP, state on disk."""
