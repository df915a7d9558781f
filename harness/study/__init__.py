"""The study: ``runner.py`` (:class:`Study`, its stages in order), one module per stage or
concern beside it — ``sample.py``, ``scoring.py``, ``controls.py``, ``nfe.py``,
``sample_props.py``, ``budget.py`` (compute budgets), ``curves.py`` (learning curves),
``distributed.py`` (DDP followers)."""


def __getattr__(name: str):
    if name == "Study":                 # lazily: the runner imports Lightning
        from harness.study.runner import Study

        return Study
    raise AttributeError(f"module 'harness.study' has no attribute {name!r}")
