"""Exporters: OTLP push and the Prometheus endpoint, each with the encoder it sends."""
