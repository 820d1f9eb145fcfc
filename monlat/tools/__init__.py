"""Operator tools: read what agents report (a metrics endpoint) and say what it means: `scrape`
fetches and parses, `matrix` draws the node-to-node matrix, `diagnose` names the fault, `plan`
tells what the defaults will do for a cluster of N nodes (with `synthetic`, the agent's own
export code fed made-up results)."""
