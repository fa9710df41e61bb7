"""The reference client: SDK (``sdk``), local device state (``state``), CLI (``cli``).

Only the client holds private keys; the server never imports this package.
"""
