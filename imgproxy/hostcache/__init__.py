"""The host's caches: one set per machine, shared by every serving worker through a directory.

``imgproxy serve --workers N`` runs N processes; each kept its own variant cache, metadata cache
and hot counters, so a second request on a new connection was a hit only if the kernel gave it
to the same worker, and a hot object needed ``hot_requests`` per worker. Here the caches live in
one directory (``cache.dir``, else a private temporary one the supervisor makes):

- ``entries.py``: one cached variant as a file: a JSON header (key, type, size, checksum) and
  the raw bytes; decoding checks everything (pure, no I/O).
- ``directory.py``: the directory itself: created 0700, refused if another user owns it or it is
  a symlink, repaired if its mode is wider; the start-up sweep (partial and temporary entries,
  leftover locks, the byte bound).
- ``variants.py``: ``HostVariantCache``: entries read and written with atomic renames, the byte
  bound kept across workers by the writer evicting the least recently used.
- ``table.py``: ``HostTable`` (SQLite, WAL) with ``HostMetadata`` and ``HostHotCounter``: the
  metadata cache and the hot counters, one row per object.
- ``limits.py``: ``HostBuckets``: the rate limits' buckets (``[limits]``), one row each in the
  table, charged in one short write transaction by whichever worker answers.
- ``flight.py``: ``HostFlight``: one render per variant on the host (``flock`` on a lock file),
  waited for without an admission slot and for a bounded time.

Nothing here imports aiohttp or PIL; everything runs on the serving process's loop thread.
"""
