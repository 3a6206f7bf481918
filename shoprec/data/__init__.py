"""Data layer: canonical schema, adapters, synthetic generator, cleaning and splits."""
