"""HTTP handlers: they parse requests and shape replies, and leave SQLite to storage."""
