"""The bridge to the plant: the plant interface, the simulator, the virtual-time driver, reports.

The embedded plant (:mod:`.plant`, SimPy), the simulator process behind the
remote plant protocol (:mod:`.remote`), the virtual-time driver
(:mod:`.virtual`), and what judges a run from its event log: the report
(:mod:`.report`) and the invariants (:mod:`.invariants`).  Also chaos
scenarios (:mod:`.chaos`), benchmark instances and dispatch-rule baselines
(:mod:`.instances`, :mod:`.dispatch`, :mod:`.baselines`, :mod:`.schedule`).
"""
