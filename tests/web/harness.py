"""A real node for the browser tests, and Python devices that act beside the browsers.

One node process (``python -m gchat serve``) and one database per test
module (a clone of the migrated template, see tests/fixtures.py); the
browsers reach it on its own port. ``PyDevice`` is the reference client
(gchat.client.sdk) on its own event loop thread, so a sync Playwright test
can use it as an admin, as a peer, or as a group member.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from crypto.identity import IdentityKeyPair
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from tests.fixtures import TestDatabases
from tests.support import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is missing: run .ci/ensure-web (make test does)"
    return path


class Node:
    """A node process with its own database and data folder."""

    def __init__(self, databases: TestDatabases, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        # A clone of the migrated template, like every other test's database
        # (a node's first-start migration is tested in tests/test_make_run.py).
        self.databases = databases
        self.database_url = databases.create(migrated=True)
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
        self.env |= {
            "GCHAT_DATABASE_URL": self.database_url,
            "GCHAT_DATA_DIR": str(tmp / "data"),
            "GCHAT_PORT": str(self.port),
            "GCHAT_REVOCATION_SWEEP_SECONDS": "1",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gchat", "serve"], cwd=REPO, env=self.env,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "node exited early"
            try:
                with urllib.request.urlopen(f"{self.http}/readyz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("node never became ready")

    def bootstrap(self) -> dict[str, str]:
        out = subprocess.run(
            [sys.executable, "-m", "gchat", "admin", "bootstrap", "--agency-code", "MOI",
             "--agency-name", "กระทรวงมหาดไทย", "--name", "ผู้ดูแลระบบ", "--json"],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def kill(self) -> None:
        """SIGKILL the node: no goodbye to its clients, nothing flushed."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        """Start the node again on the same port, database and data folder."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gchat", "serve"], cwd=REPO, env=self.env,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.databases.drop_later(self.database_url)


class Loop:
    """An asyncio loop on a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        #: Reference clients on this loop, closed with it.
        self.clients: list[Client] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            for client in self.clients:
                with contextlib.suppress(Exception):
                    await client.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class PyDevice:
    """The reference client, driven synchronously from a test."""

    def __init__(self, loop: Loop, url: str) -> None:
        self.loop = loop
        self.client = Client(DeviceState(url=url, identity_seed=IdentityKeyPair.generate().seed))
        loop.clients.append(self.client)

    def enroll(self, code: str, name: str = "cli") -> PyDevice:
        async def go() -> None:
            await self.client.connect()
            await self.client.enroll(code, name)

        self.loop.run(go())
        return self

    @property
    def official_id(self) -> UUID:
        assert self.client.state.official_id is not None
        return self.client.state.official_id

    def call(self, coro_fn: Any, *args: Any, **kw: Any) -> Any:
        return self.loop.run(coro_fn(*args, **kw))

    def request(self, frame: Any, **fields: Any) -> Any:
        return self.loop.run(self.client.request(frame, **fields))

    def close(self) -> None:
        self.loop.run(self.client.close())


def admin_device(node: Node, loop: Loop) -> PyDevice:
    """The deployment's first superadmin, enrolled with the bootstrap code."""
    return PyDevice(loop, node.ws).enroll(node.bootstrap()["code"], "admin-cli")


def new_official(admin: PyDevice, name: str, position: str = "นักวิเคราะห์นโยบาย") -> tuple[UUID, str]:
    """An official created by the admin, and a one-time enrolment code for it."""
    from protocol.frames import CreateOfficial, IssueCode

    official = UUID(str(admin.request(CreateOfficial, name=name, position=position).official_id))
    return official, str(admin.request(IssueCode, official_id=official).code)


def wait_for_text(device: PyDevice, text: str, timeout: float = 20) -> Any:
    """The reference client reads its inbox until a message with this text arrives."""

    async def go() -> Any:
        async for received in device.client.messages(idle_timeout=timeout):
            if received.plaintext == text.encode():
                return received
        raise AssertionError(f"{text!r} never reached the Python client")

    return device.loop.run(go(), timeout * 3)



class CliDevice:
    """The reference client as an official runs it: `gchat client ...` processes on a state file."""

    def __init__(self, node: Node, state: Path) -> None:
        self.node = node
        self.state = state

    def run(self, *args: str, timeout: float = 90) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "gchat", "client", *args, "--state", str(self.state)],
            cwd=REPO, env=self.node.env, capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def enroll(self, code: str) -> UUID:
        line = self.run("enroll", "--url", self.node.ws, "--code", code).strip().splitlines()[-1]
        return UUID(json.loads(line)["official_id"])

    def listen(self, count: int, idle: float = 20) -> list[dict[str, Any]]:
        """Messages received (JSON lines of `gchat client listen`), events left out."""
        lines = self.run("listen", "--count", str(count), "--idle", str(idle)).splitlines()
        return [m for m in map(json.loads, lines) if "text" in m]

    def safety_number(self, official: UUID) -> str:
        return self.run("safety-number", "--with", str(official), "--no-qr").splitlines()[1]


class Team:
    """Three officials the admin created: Anong and Boon enrol in browsers, Chai runs the CLI."""

    def __init__(self, node: Node, loop: Loop) -> None:
        self.admin = admin_device(node, loop)
        self.anong, self.anong_code = new_official(self.admin, "อนงค์ ศรีสุข", "ผู้อำนวยการกอง")
        self.boon, self.boon_code = new_official(self.admin, "บุญมี มั่นคง")
        self.chai, chai_code = new_official(self.admin, "ชัยวัฒน์ พึ่งธรรม")
        self.cli = CliDevice(node, node.tmp / "chai.state")
        assert self.cli.enroll(chai_code) == self.chai
        self.node = node

    def cli_files(self, folder: Path, idle: float = 8) -> list[dict[str, Any]]:
        """Messages the CLI receives now, its files saved (and checked) under ``folder``."""
        out = self.cli.run("listen", "--idle", str(idle), "--save-dir", str(folder))
        return [m for m in map(json.loads, out.splitlines()) if "file" in m]
