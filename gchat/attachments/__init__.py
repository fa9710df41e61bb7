"""Encrypted attachments: ciphertext blobs uploaded and downloaded in chunks."""
