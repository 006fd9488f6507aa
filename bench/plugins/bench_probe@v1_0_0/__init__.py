"""bench_probe v1.0.0: the trivial plugin of the engine benchmarks."""
