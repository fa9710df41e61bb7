"""Runtime: what a node runs on.

Batching, brokers, rate limits, metrics, server keys, embedded PostgreSQL.
"""
