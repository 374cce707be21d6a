"""Enclave appliance: the on-prem server (database, auth, audit, model, engine, API)."""
