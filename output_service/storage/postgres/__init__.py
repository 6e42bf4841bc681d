"""The PostgreSQL backend: many stateless instances on one database.

Only this package imports asyncpg (the optional `postgres` extra); this module
itself does not, so the CLI can name the start-up error without it.
"""


class StoreOpenError(Exception):
    """The database could not be reached or migrated at start-up (one line, exit 2)."""
