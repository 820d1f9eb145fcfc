"""The prober: send, match, timestamp."""
