"""prod_plugin v0.1.0: a simulated deployment with stages."""
