"""The agent, as the pipeline it runs: discovery (where are the peers?) -> probe (send, match,
timestamp) -> results (per-peer windows of RTT and loss) -> telemetry (instruments reading the
results) -> export (OTLP push, Prometheus endpoint). `agent.Agent` is the composition root, the
one place that knows every stage; `config`/`settings` parse the command line once, `sizing`
decides what a cluster of N nodes measures, `httpserver` and `logs` are its plumbing."""
