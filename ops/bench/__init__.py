"""``autocell bench``: the benchmarks — bus throughput, negotiation, scale, FJSP, healing, sim, sweep.

One module per sub-command (and :mod:`.random_instances`, seeded job shops
for held-out checks); the commands, their figures and targets are listed in
docs/running.md ("Benchmarks").
"""

DECISION_LOG_TARGET_PCT = 5.0
"""What recording a decision log may cost a bench's figures, in per cent (issue 19):
``bench bus``'s throughput, ``bench negotiation``'s round p50, p99 and caller CPU."""
