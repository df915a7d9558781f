"""Conformance suites of every plug-in kind: ``spaces.py`` (spaces), ``kinds.py``
(datasets, metrics, suites, denoisers, schedules, samplers, families) and ``nets.py`` (the
network-level checks of denoisers and families); ``l3dg check`` runs them."""
