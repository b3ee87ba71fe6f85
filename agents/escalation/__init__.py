"""Escalation: non-routine cases handed to a person, in the ISA-18.2 / IEC 62682 life cycle.

The pure core — the record and its transition table (:mod:`.lifecycle`),
the console agent (:mod:`.console`), the policy as agents see it
(:mod:`.policy`), the reject-burst detector (:mod:`.burst`) — plus the
SQLite store with its hash-chained audit log (:mod:`.store`, injected) and
the console agent's driver on the bus (:mod:`.service`).  docs/escalation.md
tells the whole story.
"""
