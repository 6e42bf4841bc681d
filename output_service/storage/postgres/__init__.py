"""The PostgreSQL backend: many stateless instances on one database."""
