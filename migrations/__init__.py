"""Alembic environment and versions for the appliance database (run through appliance.db.migrate)."""
