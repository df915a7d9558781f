"""What a run leaves on disk: ``state.py`` (stage state, results files, atomic I/O of
results), ``records.py`` (``record.json``: versions, git state, device), ``guard.py`` (the
lock and signal guard around a running study), ``seeds.py`` (aggregation over seeds)."""
