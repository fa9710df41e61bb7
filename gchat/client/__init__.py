"""The reference client: SDK (``sdk`` composing ``rpc``, ``sessions``, ``groups``;
``reconnecting``), local device state (``state``), CLI (``cli``).

Only the client holds private keys; the server never imports this package.
"""
