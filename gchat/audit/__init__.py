"""Audit: the tamper-evident metadata log, its sequencer, Merkle tree and verifier."""
