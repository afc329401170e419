"""Torch-free records and helpers every layer uses: the results schema, the point log, atomic output,
the one error type, number formatting, and the code hashes caches are keyed by."""
