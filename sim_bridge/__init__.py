"""The bridge to the plant: the plant interface, the simulator, the virtual-time driver, reports.

The plant interface (:mod:`.plant_api`), the fence in front of every backend
(:mod:`.fence`, journalled by :mod:`.fence_store`), the gateway that routes
commands to backends (:mod:`.gateway`), the embedded backend (:mod:`.plant`,
SimPy), the gateway process behind the remote plant protocol
(:mod:`.remote`, ``autocell plant``), the virtual-time driver
(:mod:`.virtual`), and what judges a run from its event log: the report
(:mod:`.report`) and the invariants (:mod:`.invariants`).  Also chaos
scenarios (:mod:`.chaos`), benchmark instances and dispatch-rule baselines
(:mod:`.instances`, :mod:`.dispatch`, :mod:`.baselines`, :mod:`.schedule`).
"""
