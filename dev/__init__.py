"""What tests, benchmarks and `make` targets use and a deployment does not: kept out of the
installed package (`python -m dev.<module>` from the repository root)."""
