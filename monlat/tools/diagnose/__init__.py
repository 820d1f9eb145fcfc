"""`monlat diagnose`: say where the trouble is (a zone boundary, a node, a link, a blind spot).

Everything here is a pure function of a `Matrix`. The analysis, in order:

1. ZONE: with zone labels, the pairs between two zones (each with at least two nodes) are slow
   when their median is `latency_factor` times the intra-zone baseline (the median of every
   same-zone pair) and `min_excess_ms` above it; lossy when at least half of them lose
   `loss_threshold` or more while the intra-zone pairs do not.
2. NODE: a pair is slow when its RTT is `latency_factor` times its expected RTT and
   `min_excess_ms` above it; expected is the median of its group (same-zone pairs, or the pairs
   between its two zones) *leaving out the node under examination*, so that one bad node in a
   three-node cluster cannot drag the baseline up to itself. A node is bad towards its peers (its
   row) or from them (its column) when at least half of those pairs, and at least two, are slow
   or lossy.
3. LINK: a slow (against the baseline without the bad nodes) or lossy pair whose two nodes were
   not found bad; a pair and its reverse make one finding.
4. COVERAGE: nodes that probe nobody, nodes nobody probes, nodes probed by fewer agents than
   `monlat_expected_probers` says (when the shortfall is not explained by silent agents).
"""
