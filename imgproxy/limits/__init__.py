"""Rate limits (``[limits]``): how often one signed URL, key, token, viewer (``sub``) or client
address may fetch originals, and how often it may make the image pool render.

- ``buckets.py``: which buckets a request is charged to, in the order they are checked (pure).
- ``gcra.py``: the arithmetic of one charge over several buckets, all or nothing (pure).
- ``limiter.py``: ``Limiter`` (charge, or raise ``RateLimited``), ``LocalBuckets`` (one process's
  memory) and ``build_limiter``; the host's buckets, shared by its serving workers, are
  ``hostcache/limits.py``'s ``HostBuckets``.
"""
