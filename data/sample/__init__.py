"""The bundled sample of the UCI Online Retail data and its licence (installed as the package
data ``shoprec_sample``, so ``shoprec train`` without data works from any folder)."""
