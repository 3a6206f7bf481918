"""Prefect tasks: thin wrappers over one ``shoprec`` function each."""
