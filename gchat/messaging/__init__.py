"""Messaging: accepting, committing and delivering envelopes."""
