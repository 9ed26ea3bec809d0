"""samkit.measure."""
