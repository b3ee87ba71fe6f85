"""Prometheus scrape configuration for a cell (``autocell ops prometheus-config``)."""
