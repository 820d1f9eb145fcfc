"""monlat: node-to-node ICMP latency, loss and jitter, exported with OpenTelemetry."""

__version__ = "0.1.0"
