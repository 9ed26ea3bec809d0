"""samkit.study."""
