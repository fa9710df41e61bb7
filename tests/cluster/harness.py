"""Real node processes (``python -m gchat serve``) sharing one database,
one Redis (by prefix) and one keys folder, and devices enrolled on them.

Every subprocess is killed in ``Cluster.close`` (called from a finally
block), whatever happened; node logs are kept in the test's tmp folder and
their tails are printed when a test fails.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from crypto.identity import IdentityKeyPair
from gchat.client.reconnecting import Reconnecting
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.directory.service import Directory
from gchat.store.database import Database
from protocol.frames import CreateOfficial, IssueCode
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]


class Node:
    def __init__(self, name: str, env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.env = env
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gchat", "serve"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status, response.read().decode()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                if self.http("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never became ready:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  [{self.name}] {line}" for line in text[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """``size`` nodes on loopback ports: same database, Redis prefix and keys."""

    def __init__(
        self, tmp: Path, database_url: str, redis_url: str, redis_prefix: str, size: int = 3,
        **settings: str,
    ) -> None:
        self.database_url = database_url
        keys = tmp / "keys"
        base = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
        base |= {
            "GCHAT_DATABASE_URL": database_url,
            "GCHAT_REDIS_URL": redis_url,
            "GCHAT_REDIS_PREFIX": redis_prefix,
            "GCHAT_KEYS_DIR": str(keys),
            "GCHAT_COMMIT_WINDOW_MS": "1",
            "GCHAT_DB_POOL_SIZE": "6",
            # The cross-node test drains one target's bundles to measure the
            # per-device limit; the per-target one is tested on one node.
            "GCHAT_RATE_LIMITS": "bundle_fetches_per_target=1000/1000",
            "PYTHONUNBUFFERED": "1",
        }
        base |= settings
        self.nodes = []
        for i in range(size):
            port = free_port()
            env = base | {
                "GCHAT_PORT": str(port),
                "GCHAT_DATA_DIR": str(tmp / f"node{i}"),
                "GCHAT_NODE_ID": f"node{i}",
            }
            self.nodes.append(Node(f"node{i}", env, port, tmp / f"node{i}.log"))

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def start(self) -> None:
        # The first node alone: it migrates the database and writes the keys
        # that the others then load (two nodes must not both generate them).
        self.nodes[0].start()
        await asyncio.to_thread(self.nodes[0].wait_ready)
        for node in self.nodes[1:]:
            node.start()
        await asyncio.gather(*(asyncio.to_thread(n.wait_ready) for n in self.nodes[1:]))

    def close(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                if node.proc is not None:
                    node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            node.kill()

    def logs(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)


@dataclass
class People:
    """The admin and the officials' devices, enrolled through real nodes."""

    cluster: Cluster
    admin: Client | None = None
    clients: list[Client] = field(default_factory=list)

    async def bootstrap(self) -> None:
        db = await Database.connect(self.cluster.database_url, min_size=1, max_size=2)
        try:
            _, _, code = await Directory(db, 3600).bootstrap("MIN", "Ministry", "Admin")
        finally:
            await db.close()
        self.admin = await self.enroll(self.cluster[0].url, code, "admin-phone")

    async def enroll(self, url: str, code: str, name: str) -> Client:
        client = Client(DeviceState(url=url, identity_seed=IdentityKeyPair.generate().seed))
        await client.connect()
        await client.enroll(code, name)
        self.clients.append(client)
        return client

    async def official(self, name: str, node_indexes: list[int]) -> list[Client]:
        """An official with one device on each of these nodes."""
        assert self.admin is not None
        official = UUID(str((await self.admin.request(CreateOfficial, name=name)).official_id))
        devices = []
        for i, index in enumerate(node_indexes):
            code = (await self.admin.request(IssueCode, official_id=official)).code
            devices.append(await self.enroll(self.cluster[index].url, code, f"{name}-{i}"))
        return devices

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def failover(client: Client, urls: list[str], first: int) -> Reconnecting:
    """The same device as a reconnecting client, home node first."""
    order = urls[first:] + urls[:first]
    return Reconnecting(client.state, order, backoff_base=0.05, backoff_cap=0.5)
