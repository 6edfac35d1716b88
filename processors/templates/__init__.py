"""Jinja2 templates for notifications; per-locale overrides go in ``<dir>/<locale>/<name>``."""
