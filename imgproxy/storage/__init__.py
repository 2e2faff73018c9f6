"""Object storage backends."""
