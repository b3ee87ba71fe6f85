"""The agents: sans-io order, machine and robot agents, and the runtime that hosts them.

Every agent is an object with ``on_*`` inputs that return actions
(:mod:`agents.base`); it never reads a clock, sleeps or touches a socket.
The sub-packages are floors of their own (docs/architecture.md, Layers):
:mod:`agents.protocol` (messages, actions, the envelope codec) and
``agents.cell`` (the cell model) below the agents; :mod:`agents.negotiation`
(the contract net and strategies) and :mod:`agents.escalation` (the
escalation core) with them; :mod:`agents.runtime` (the runner, bus,
transports, host, journal) above them.
"""
