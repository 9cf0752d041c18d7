"""The benchmark: one command that starts what it needs, measures each case group and writes
``bench/results/*.json``, PNG plots beside them and ``docs/benchmarks.md``.

    .venv-server/bin/python -m devtools.bench [--quick] [--cases chat,batching,...] [--page-only]

Modules: ``groups`` (the case groups in order), one module per group (``chat``, ``batching``,
``embeddings``, ``media``, ``speech``, ``failover``, ``footprint``), ``stack`` (the server and the
plugin they run against), ``models`` (the benchmark's model repository source), ``stats``
(medians, spread, percentiles, A/B rounds), ``runner`` and ``progress`` (running, progress lines,
the JSON), ``report`` and ``report_tools`` (the page and its plots). Numbers, not assertions:
the test suite never times anything.
"""
