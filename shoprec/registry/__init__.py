"""The MLflow side: tracking setup, the pyfunc model, publishing with a gate, aliases."""
