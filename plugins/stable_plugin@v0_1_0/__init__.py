"""stable_plugin v0.1.0: checks a list of simulated services."""
