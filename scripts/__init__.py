"""Repository scripts; the Python ones are importable for their tests."""
