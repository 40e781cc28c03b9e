"""Test helpers shared with benchmarks/ (which put tests/ on sys.path): the fuzzing library."""
