"""samkit.models."""
