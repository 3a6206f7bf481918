"""Prefect flows: straight-line wiring of the tasks in ``tasks/``."""
