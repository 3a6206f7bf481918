"""``python -m shoprec_cli``: the same as the ``shoprec`` console script."""

from shoprec_cli.app import main

main()
