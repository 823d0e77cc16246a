"""havip: keep a virtual IP alive on one of two servers, over one mutual-TLS link."""

__version__ = "0.1.0"
