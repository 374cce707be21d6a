"""Alembic revisions, one module each; the first is ``0001_foundation``."""
