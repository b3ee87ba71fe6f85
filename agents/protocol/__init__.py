"""The protocol: typed messages, the actions agents return, and the envelope codec.

One frozen class per performative (:mod:`.messages`), generated ``from_wire``
validators, and the actions of the sans-io core (:mod:`.actions`).  Pure:
imports only :mod:`security`.  The wire format is normative in
docs/PROTOCOL.md.
"""
