"""The ``negotiated`` maintenance policy on the plant gateway of ``autocell up``.

Under ``autocell run`` the policy is put on the virtual cell (:func:`attach` in
:mod:`sim_bridge.maintenance.policies`); under ``autocell up`` the simulator is the
gateway's embedded backend in its own process (:class:`sim_bridge.remote.PlantServer`),
and the machine agents, the crew agent among them, run on the hosts.  A cell file that
says ``maintenance: {negotiate: true}`` builds the crew and the machines' window
planners on every host, so the gateway must do their jobs too: this module gives the
embedded backend the same workshop (technicians' hands, the shelf) and catches the
machines' ``set_state maintenance`` in front of the gateway, by the very code the
virtual cell uses.  Nothing here decides when to maintain: the agents do.

The estimators start on the hosts from the trained models the cell file names
(``maintenance.models``, read by each host from the cell file) or else from the cell
file's figures; the hosts export their agents' health gauges, so the gateway's
``/metrics`` leaves those series to them (sim_bridge/maintenance/metrics.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from .policies import Controller, attach

if TYPE_CHECKING:
    from sim_bridge.remote import PlantServer

__all__ = ["attach_to_gateway", "negotiates"]


def negotiates(cfg: object) -> bool:
    """The cell's agents lease maintenance windows: ``negotiate: true`` and something wears
    (as ``autocell run`` decides, ops/run.py)."""
    m = getattr(cfg, "maintenance", None)
    return bool(m is not None and m.negotiate
                and any(x.degradation is not None for x in getattr(cfg, "machines", [])))


def attach_to_gateway(server: PlantServer) -> Controller | None:
    """The ``negotiated`` policy on ``server``'s embedded backend when the cell negotiates;
    ``None`` (and nothing changed) when it does not.  Call before the server runs."""
    from sim_bridge.plant import EmbeddedBackend

    if not negotiates(server.cfg):
        return None
    embedded = [b for b in server.plant.backends.values() if isinstance(b, EmbeddedBackend)]
    if not embedded:
        return None          # every machine on real equipment: its own people maintain it
    gateway = server.plant
    # :func:`attach` reads a virtual cell's env, cfg, plant (with the embedded backend as
    # ``plant.backend``; ``plant.command`` is wrapped in place) and runner (only for
    # trained models, none here): the gateway is that plant
    gateway.backend = embedded[0]       # type: ignore[attr-defined]
    view = SimpleNamespace(env=server.env, cfg=server.cfg, plant=gateway,
                           runner=SimpleNamespace(agents={}))
    return attach(view, "negotiated", {})  # type: ignore[arg-type]
