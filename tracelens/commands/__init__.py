"""CLI command groups. Each module exposes ``register(app)`` and imports heavy libraries only inside commands."""
