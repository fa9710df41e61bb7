"""G-Chat load tests: a load generator, scenarios, the raw-relay reference, reports.

Run ``python -m loadtests run all --short`` (``make bench``); see
docs/PERFORMANCE.md for what the scenarios measure and the latest figures.
"""
