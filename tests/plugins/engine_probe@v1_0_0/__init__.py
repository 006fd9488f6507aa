"""engine_probe v1.0.0: a throwaway plugin for the engine tests."""
