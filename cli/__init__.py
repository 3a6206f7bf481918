"""The ``shoprec`` command line (installed as ``shoprec_cli``).

It lives outside the core because it launches the Prefect flows: the arrows of DESIGN.md
point one way, command line -> flows -> tasks -> shoprec.
"""
