"""One module per ``enclave`` command; each exposes ``register(parser)`` (see appliance.cli)."""
