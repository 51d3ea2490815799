"""dotslab benchmarks: DOTS / RR / DOTS+RR vs GRPO side by side (``python -m benchmarks.run``).

See benchmarks/README.md for what is measured and how to read the results.
"""
