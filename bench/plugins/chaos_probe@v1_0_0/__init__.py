"""chaos_probe v1.0.0: the plugin of the chaos benchmark (bench/chaos.py)."""
