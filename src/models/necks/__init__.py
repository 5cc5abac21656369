"""See src/models/__init__.py."""
