"""What the agent and the operator tools share: errors, metric names, durations."""
