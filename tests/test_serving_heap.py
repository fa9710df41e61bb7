"""A serving node freezes its start-up heap and collects the young generation rarely.

Full collections over the ~100,000 objects a started node holds stalled
every connection for tens of milliseconds (``gchat.app.settle_heap``). The
node is run as ``gchat serve`` runs it (``gchat.app.main``), in its own
process, so the test process's collector is left as it is.
"""

import json
import subprocess
import sys
from pathlib import Path

from gchat.app import GC_THRESHOLDS

_NODE = """
import gc, json, os, signal, sys
from pathlib import Path
from gchat import app
from tests.support import node_config

def ready():
    print(json.dumps({"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}),
          flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # then the node stops as on a real SIGTERM

app.main(node_config(sys.argv[1], Path(sys.argv[2])), ready)
"""


def test_a_served_node_freezes_its_start_up_heap(database_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NODE, database_url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["frozen"] > 10_000  # modules, classes, functions: not walked again
    assert tuple(said["thresholds"]) == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # CPython's default, which collected under steady load
