"""Transport robots as VDA 5050 vehicles: the ``vda5050`` plant backend (master control).

:mod:`.schema` validates every message against the official VDA 5050 2.0.0
JSON schemas (``schemas/``); :mod:`.messages` builds the messages autocell
sends; :mod:`.backend` drives the vehicles.
"""
