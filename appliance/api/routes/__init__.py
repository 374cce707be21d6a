"""Route modules, one per family: openai, auth, admin, audit, health (with metrics)."""
