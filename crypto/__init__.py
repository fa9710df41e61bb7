"""G-Chat end-to-end cryptography (sans-I/O, PyNaCl + stdlib only).

Identity keys and device certificates, X3DH, the Double Ratchet, sender keys
for groups, safety numbers and the at-rest keystore format. Byte formats are
specified in docs/PROTOCOL.md, Part II; every error is a :class:`crypto.errors.CryptoError`.
"""
