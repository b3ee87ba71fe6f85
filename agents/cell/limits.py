"""The finite ranges of every number in a cell file (issue 20, class 2).

The schema alone would let through numbers the core cannot carry: an integer
msgpack cannot encode (2^64 and up), a float whose arithmetic overflows
(a coordinate of 1.7e308 makes a distance of ``inf``), or a time so far away
that the virtual run steps heartbeats and sensor readings for ever before it
gets there.  Each bound here is far beyond any real cell and small enough that
the run stays finite; ``autocell validate`` refuses a value outside it with
``FILE:LINE`` (docs/running.md, "Limits of input files").
"""

from __future__ import annotations

#: Any time or duration in a cell or fault file, seconds: about 115 days of cell time.
#: Also the bound of one order's processing work (quantity × routing), checked by the loader.
MAX_SECONDS = 1e7

#: Units of one order (processed as one batch).
MAX_QUANTITY = 1_000_000

#: An order's priority (higher is more urgent).
MAX_PRIORITY = 1_000

#: A location's coordinates, metres either side of the origin (1000 km).
MAX_COORDINATE_M = 1e6

#: The shortest negotiation timing (reply deadline, heartbeat, lease), seconds: below it
#: the simulated network's own latency outlives a lease and orders are lost.
MIN_TIMING_S = 0.01

#: The longest reply deadline, seconds: an order waits this long for bids at every call.
MAX_REPLY_DEADLINE_S = 60.0

#: The longest heartbeat interval and lease, seconds.
MAX_LEASE_S = 86_400.0

#: A run seed (non-negative; the simulator's random generators take 64 bits).
MAX_SEED = 2**63 - 1
