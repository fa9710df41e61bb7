"""Conversation tests use the shared fixtures (``world``, ``world_with``) of tests/fixtures.py."""

from tests.fixtures import WorldFactory

__all__ = ["WorldFactory"]
