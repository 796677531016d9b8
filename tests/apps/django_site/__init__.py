"""A small Django project for the tests: the README's three steps, followed literally."""
