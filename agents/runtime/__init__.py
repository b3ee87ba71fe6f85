"""The runtime: what carries out the agents' actions — runner, bus, transports, host, journal.

The runner executes actions for every driver; the bus seals, routes and
opens envelopes over a transport (ZeroMQ or the in-memory twin); the host
runs a group of agents on one asyncio loop in scaled real time; the journal
writes every input ahead so an agent can be rebuilt by replay; the observer
hook feeds metrics.  The first floor with I/O (docs/architecture.md, The
runner and its drivers).
"""
