"""Delivering originals: the pure delivery choice, streaming, and offloading to S3 or nginx."""
