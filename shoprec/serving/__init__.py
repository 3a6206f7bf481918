"""Serving: the engine that answers requests from a model bundle, and the HTTP server."""
