"""trail_probe v1.0.0: every execution leaves a trail in a file (failover test and bench/chaos.py)."""
