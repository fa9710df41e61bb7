"""Conversations: groups and their membership."""
