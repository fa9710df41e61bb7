"""The README's "Try it" and OPERATIONS.md's auditor walkthrough, run word for
word (each line through bash, as a person would paste it) against a real
node. Only the placeholders (``<CODE>``, ``<OFFICIAL_ID>``, ...) are filled
in, from what the earlier commands printed, and the documented port is the
test node's."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import running_node

REPO = Path(__file__).resolve().parents[2]
UUID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"

#: After a line containing the key: which placeholder its output fills, and how.
CAPTURES = {
    "gchat admin bootstrap": ("CODE", r"enrolment code for .+?: (\S+)"),
    'official add --name-en "Somchai"': ("OFFICIAL_ID", r"(?m)^" + UUID),
    "code issue <OFFICIAL_ID>": ("CODE2", r"enrolment code (\S+)"),
    'official add --name-en "Auditor"': ("AUDITOR_ID", r"(?m)^" + UUID),
    "code issue <AUDITOR_ID>": ("AUDITOR_CODE", r"enrolment code (\S+)"),
}


def block(path: Path, heading: str) -> list[str]:
    """The command lines of the first ```sh block after ``heading``."""
    text = path.read_text()
    start = text.index(heading)
    body = text[text.index("```sh\n", start) + 6 :]
    body = body[: body.index("```")]
    return [line for line in body.splitlines()
            if line.strip() and not line.startswith(("#", ". "))]


def run_lines(lines: list[str], env: dict[str, str], port: int, cwd: Path,
              values: dict[str, str]) -> dict[str, str]:
    outputs = {}
    for line in lines:
        command = line.replace("127.0.0.1:8765", f"127.0.0.1:{port}")
        for name, value in values.items():
            command = command.replace(f"<{name}>", value)
        assert not re.search(r"<[A-Z_0-9]+>", command), f"unfilled placeholder: {command}"
        out = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, (line, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        outputs[line] = out.stdout
        for key, (name, pattern) in CAPTURES.items():
            if key in line:
                found = re.search(pattern, out.stdout)
                assert found, (line, out.stdout)
                values[name] = found.group(1)
    return outputs


def test_readme_then_auditor_walkthrough(pg_admin_dsn: str, tmp_path: Path) -> None:
    with running_node(pg_admin_dsn) as (env, port, _):
        env = env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
        values: dict[str, str] = {}
        readme = block(REPO / "README.md", "## Try it: two officials")
        out = run_lines(readme, env, port, tmp_path, values)
        assert "สวัสดีครับ" in out[readme[-1]]  # Somchai received it

        walk = block(REPO / "docs" / "OPERATIONS.md", "## An auditor's day")
        out = run_lines(walk, env, port, tmp_path, values)
        pub = (tmp_path / "audit.pub").read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", pub)
        recent = next(text for line, text in out.items() if "--since 24h" in line)
        assert "admin.bootstrap" in recent and "message.accepted" in recent
        assert "Admin (" in recent  # names, not bare ids
        granted = next(text for line, text in out.items() if "--agency MOF" in line)
        assert "admin.role_granted" in granted and "Auditor (" in granted
        assert out[walk[-1]].startswith("OK: ")
