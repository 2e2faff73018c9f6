"""Running the app: one serving process, or a supervisor with worker processes."""
