"""samkit.optim."""
