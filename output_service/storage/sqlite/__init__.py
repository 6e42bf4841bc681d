"""The SQLite backend: results files in `db_dir`, in the order of their life.

- `connect.py`, `transactions.py`, `schema.py`: how a file is opened, written
  in explicit transactions, and given its tables (and migrated).
- `file_names.py`, `file_info.py`: what a file is called (for people) and what
  it records about itself (started when; live, sealing or sealed).
- `inventory.py`: start-up: every file checked, corruption quarantined, faults
  reported as faults.
- `results_file.py`, `writer.py`: the live file and the one writer that owns it.
- `key_index.py`, `idempotency.py`: idempotency keys, durable and cached.
- `rotation_policy.py`, `rotator.py`, `snapshot.py`: when to start a new file,
  starting it, sealing the old one (its read indexes, one checkpoint).
- `registry.py`, `catalog.py`: the retained files, their totals and retention;
  listing and dumping them.
- `reader.py`, `reads/`: /recent and the query API across files.
- `store.py`: all of it behind the seam.
"""
