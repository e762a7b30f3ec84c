"""Benchmark commands (``img2kernel bench ...``): they print figures; speed targets live here, not in tests."""
