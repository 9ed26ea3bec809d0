"""samkit.data."""
