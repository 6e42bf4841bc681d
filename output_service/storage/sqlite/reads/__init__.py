"""The SQLite implementation of the seam's `Reads` (see reads.py)."""
