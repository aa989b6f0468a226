"""syncrouter benchmarks: ``python -m benchmarks --help``.

Each row measures a syncrouter path and a baseline in the same process, on the
same databases, and prints the ratio of their rates. Absolute rates on a shared
machine drift between runs; ratios from one run are what to quote.
"""
