"""Predictive maintenance: the machine's degradation settings and the estimators that turn
sensor readings into a health index and a remaining-useful-life distribution
(docs/maintenance.md).  Importing the package loads nothing heavy: the cell model imports
:mod:`agents.cell.maintenance` from here."""
