"""sample_plugin v0.1.0: greets someone a few times."""
