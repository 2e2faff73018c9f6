"""Signers for other runtimes (JavaScript) and the vectors every signer must match.

The files here are package data: ``vectors.json`` (rendered from ``UrlSigner`` by
``vectors.py``) and ``imgproxy-sign.mjs``.
"""
