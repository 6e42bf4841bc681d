"""Storage: the seam handlers speak (`seam.py`) and the backends behind it.

- `seam.py`: the protocols (`Store`, `Archive`, `HopOutbox`), the plain data
  crossing them and the errors a store raises. Backend-neutral.
- `read_gate.py`: bounds concurrent reads and their time (any backend).
- `dir_lock.py`: one process per data directory.
- `sqlite/`: the default backend, results files in `db_dir`.
- `postgres/`: the shared-database backend (`storage = "postgres"`).
"""
