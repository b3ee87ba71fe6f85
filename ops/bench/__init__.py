"""``autocell bench``: the benchmarks — bus throughput, negotiation, scale, FJSP, healing, sim, sweep.

One module per sub-command (and :mod:`.random_instances`, seeded job shops
for held-out checks); the commands, their figures and targets are listed in
docs/running.md ("Benchmarks").
"""
