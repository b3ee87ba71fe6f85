"""The supervisor console: a web UI over the escalation store (docs/escalation.md).

* :mod:`ops.console.backend` — the port to the escalation store, and its in-memory twin;
* :mod:`ops.console.users` — users, roles and scrypt password hashes (SQLite);
* :mod:`ops.console.security` — sessions, CSRF, login throttling (no HTTP);
* :mod:`ops.console.views` — sorting, grouping, floods, countdowns (no HTTP);
* :mod:`ops.console.app` — the Starlette application and its templates;
* :mod:`ops.console.server` — ``autocell console`` and ``autocell users``.
"""
