"""Image transformation: parameters (pure), Pillow steps, and the worker pool."""
