"""Operations: what people touch — the ``autocell`` CLI, config, supervisor, console, metrics.

The top floor (docs/architecture.md, Layers): the command line
(:mod:`.cli`), cell-file loading (:mod:`.config`), ``autocell run`` and the
process supervisors (:mod:`.run`, :mod:`.up`, :mod:`.ray_up`), the web
console (:mod:`.console`), metrics and logs (:mod:`.metrics`, :mod:`.logs`),
the benchmarks (:mod:`.bench`), sweeps (:mod:`.experiment`) and deployment
files (``grafana/``, ``prometheus/``, ``systemd/``).
"""
