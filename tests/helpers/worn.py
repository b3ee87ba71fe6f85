"""An estimator of a machine close to its end, whatever it reads (tests of the window)."""

from __future__ import annotations

from agents.maintenance.estimators import Estimator
from agents.maintenance.rul import NormalRul, Rul


class Worn(Estimator):
    """Health 0.2 and ``LEFT_S`` operating seconds left (sd ``SD_S``), whatever it reads:
    a machine close to its end (a subclass sets other figures)."""

    name = "worn"
    LEFT_S = 100.0
    SD_S = 10.0

    def health(self) -> float:
        return 0.2

    def rul(self) -> Rul:
        return NormalRul(self.LEFT_S, self.SD_S)
