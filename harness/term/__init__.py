"""Terminal plumbing: ``progress.py`` (one progress view), ``quiet.py`` (library noise and
verbosity flags), ``lightning_bar.py`` (Lightning's side of the progress view),
``interrupts.py`` (the harness owns Ctrl-C)."""
