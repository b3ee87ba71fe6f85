"""The cell's power budget: the energy manager agent and the lease table it keeps
(docs/energy.md, docs/PROTOCOL.md "Power leases")."""
