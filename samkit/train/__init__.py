"""samkit.train."""
