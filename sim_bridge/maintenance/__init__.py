"""Maintenance in the simulator: the crew and stores (:mod:`.workshop`) and the policies
that decide when to maintain (:mod:`.policies`); the wear itself is sim_bridge/degradation.py."""
