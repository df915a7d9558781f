"""Reports read only results files: ``write.py`` (``report.md`` and plots of a study),
``html.py`` (the offline ``report.html``), ``tables.py``, ``plots_curves.py``,
``plots_factors.py``, ``compare.py`` (``l3dg compare``), ``sweep.py`` (``l3dg sweep-report``)."""
