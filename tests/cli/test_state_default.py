"""Without ``--state`` a device's state lives in the user's config folder
(``$XDG_CONFIG_HOME/gchat``), private, not in whatever folder the command
ran from."""

import json
from pathlib import Path

from tests.cli.conftest import Node


def test_state_defaults_to_the_config_folder(node: Node, tmp_path: Path) -> None:
    official = json.loads(node.run("admin", "official", "add", "--name-en", "Wilai",
                                   "--json", "--state", str(node.admin), check=True).stdout)
    human = node.run("admin", "code", "issue", official["id"],
                     "--state", str(node.admin), check=True)
    assert human.stdout.startswith("enrolment code ")
    code = json.loads(node.run("admin", "code", "issue", official["id"], "--json",
                               "--state", str(node.admin), check=True).stdout)["code"]
    env = node.env | {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    node.run("client", "enroll", "--url", node.url, "--code", code, env=env, check=True)
    state = tmp_path / "config" / "gchat" / "device.state"
    assert state.stat().st_mode & 0o777 == 0o600
    assert Path(str(state) + ".key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "config" / "gchat").stat().st_mode & 0o077 == 0
    assert not list(node.home.glob("device.state*"))  # not in the working folder
    out = node.run("client", "listen", "--idle", "1", env=env)  # found without --state
    assert out.returncode == 0, out.stderr
