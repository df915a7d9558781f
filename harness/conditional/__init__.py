"""Conditional generation (EDM protocol): ``protocol.py`` (predictors, targets, sampling,
evaluation), ``report.py`` (tables and
plots), ``xtb.py`` (the GFN2-xTB physics column). Its config section is
``harness.config.conditional``."""
