"""lab_plugin v0.1.0: simulates a lab experiment that sometimes fails."""
