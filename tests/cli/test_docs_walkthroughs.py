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
ADMIN_CAPTURES = {
    "gchat admin bootstrap": ("CODE", r"enrolment code for .+?: (\S+)"),
    "official add --agency MOI-DOPA": ("OFFICIAL_ID", r"(?m)^" + UUID),
    "code list <OFFICIAL_ID>": ("CODE_ID", r"(?m)^" + UUID + r"\s+pending"),
    "code issue <OFFICIAL_ID>": ("CODE", r"enrolment code (\S+)"),
    "device list <OFFICIAL_ID>": ("DEVICE_ID", r"(?m)^" + UUID),
}


def block(path: Path, heading: str, every: bool = False) -> list[str]:
    """The command lines of the first ```sh block after ``heading`` (``every``:
    of all the blocks up to the next heading)."""
    text = path.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    bodies = [b.split("```")[0] for b in section.split("```sh\n")[1:]]
    return [line for body in (bodies if every else bodies[:1]) for line in body.splitlines()
            if line.strip() and not line.startswith(("#", ". "))]


def run_lines(lines: list[str], env: dict[str, str], port: int, cwd: Path,
              values: dict[str, str], captures: dict[str, tuple[str, str]] = CAPTURES,
              ) -> dict[str, str]:
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
        for key, (name, pattern) in captures.items():
            if key in line:
                found = re.search(pattern, out.stdout)
                assert found, (line, out.stdout)
                values[name] = found.group(1)
    return outputs


def test_readme_then_auditor_walkthrough(database_url: str, tmp_path: Path) -> None:
    with running_node(database_url) as (env, port, _):
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


INTAKE = (
    "employee_id,name_th,name_en,position,agency_code,email,phone\r\n"
    "200001,สมศรี มีสุข,Somsri Meesuk,นักวิเคราะห์นโยบายและแผน,MOI-DOPA,somsri@dopa.go.th,"
    "+66 2 123 4567\r\n"
    "200002,ประเสริฐ ดีงาม,Prasert Deengam,นิติกร,MOI,,\r\n"
)


def test_admin_walkthrough(database_url: str, tmp_path: Path) -> None:
    with running_node(database_url) as (env, port, _):
        env = env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
        values: dict[str, str] = {}
        run_lines(["gchat admin bootstrap --agency-code OPM --agency-name 'Office of the "
                   "Prime Minister' --name Admin",
                   "gchat client enroll --url ws://127.0.0.1:8765 --code <CODE> "
                   "--state admin.state"], env, port, tmp_path, values, ADMIN_CAPTURES)
        (tmp_path / "intake.csv").write_bytes(INTAKE.encode("cp874"))  # Thai Excel
        lines = block(REPO / "docs" / "OPERATIONS.md", "## An admin's day", every=True)
        assert len(lines) >= 15
        out = run_lines(lines, env, port, tmp_path, values, ADMIN_CAPTURES)
        tree = next(text for line, text in out.items() if "agency list" in line)
        assert "MOI" in tree and "  MOI-DOPA" in tree and "กรมการปกครอง" in tree
        applied = [line for line in out if "intake.csv --apply" in line]
        assert applied
        revoked = next(text for line, text in out.items() if "device revoke" in line)
        assert "revoked" in revoked
