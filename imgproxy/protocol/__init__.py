"""HTTP mechanics below the handlers: connections, send pacing, paths, conditionals, media types."""
