"""Throwaway plugins used by the tests (importable as ``tests.plugins.<folder>.plugin.Plugin``)."""
