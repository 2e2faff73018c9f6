"""Authorization of image requests: signed URLs (``signing``) and bearer tokens (``tokens``)."""
