"""Negotiation: the contract net with leases as transition tables, and the strategy plug-ins.

:mod:`.contract_net` holds the initiator's and the participant's tables (the
only definition of the legal transitions); :mod:`.strategies` the built-in
order and resource strategies and how a strategy is named; :mod:`.slack`
the ``slack_bidding`` plug-in.  Pure (docs/strategies.md,
docs/architecture.md, Negotiation).
"""
