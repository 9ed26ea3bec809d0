"""samkit.theory."""
