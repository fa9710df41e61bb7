"""A node's name, stable across restarts.

Logs, metrics, the audit sequencer's election and the Redis broker all say
which node did something. A name made up at every start (as before) splits
one node's history into many; so unless the configuration names the node,
the first start writes ``<data_dir>/node-id`` (the host name plus a random
suffix, so two nodes on one host differ) and later starts read it back.
"""

import os
import re
import secrets
import socket
from pathlib import Path

FILE_NAME = "node-id"
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def load_or_create(data_dir: Path, configured: str = "") -> str:
    """``configured`` when set, else the id kept in ``data_dir`` (made on first use)."""
    if configured:
        return configured
    path = data_dir / FILE_NAME
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    else:
        if not _VALID.fullmatch(kept):
            raise ValueError(f"{path} does not hold a node id; delete it to make a new one")
        return kept
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48] or "node"
    node_id = f"{host}-{secrets.token_hex(3)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process on the same folder won the race
        return load_or_create(data_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(node_id + "\n")
    return node_id
