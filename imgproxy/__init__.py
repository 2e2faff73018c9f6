"""imgproxy: an authenticated proxy that serves private S3 images to browsers and services."""

__version__ = "0.1.0"
