"""The ground floor: data types, registry, chemistry I/O, datasets, shared nn blocks, atomic I/O.

Nothing here imports ``spaces``, ``generators``, ``metrics`` or the top floor of ``harness``;
every other package may import it. It stays light (no Lightning) so the CLI starts fast.
"""
