"""snyk-forwarder: signed Snyk webhooks in, durable buffer, one SIEM record per issue out."""

__version__ = "0.1.0"
