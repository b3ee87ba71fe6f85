"""Machines on OPC UA servers: the ``opcua`` plant backend and its commissioning tools.

:mod:`.backend` drives machines (docs/equipment.md), :mod:`.jobs` is the
``machinery-jobs`` profile (OPC 40001-3), :mod:`.session` opens a secured
session, :mod:`.pki` keeps the gateway's certificate, trust list and
credentials, :mod:`.commission` browses and checks servers for
``autocell equipment``.
"""
