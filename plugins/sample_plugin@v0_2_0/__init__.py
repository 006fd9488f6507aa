"""sample_plugin v0.2.0: greets several people, in a chosen style."""
