"""The Great Expectations suites, one JSON file per suite (installed as the package data
``shoprec_expectations``, so an installed shoprec validates from any folder).
"""
