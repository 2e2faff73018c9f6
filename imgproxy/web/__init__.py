"""The HTTP application: its assembly, routes, middleware, health and metrics endpoints."""
