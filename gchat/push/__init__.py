"""Content-free Web Push: wake a sleeping device, tell nothing else (docs/PROTOCOL.md)."""
