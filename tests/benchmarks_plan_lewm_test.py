"""benchmarks/plan_lewm.py --previous: one env per command still lands in one lewm.json."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a subprocess: the benchmark defines absl flags at import, which must not meet other modules' flags.
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks import plan_lewm
previous = dict(date="d0", command="c0", success=dict(tworoom=0.9, pusht=0.1), plan_s=dict(tworoom=0.09, pusht=0.2),
                surprise=dict(tworoom="s"), runs=dict(pusht=dict(date="d-1", command="c-1")))
out = dict(date="d1", command="c1", success={{}}, plan_s={{}})
plan_lewm.keep_other_envs(out, previous, ran={{"pusht"}})
print(json.dumps(out))
"""


def test_previous_results_of_other_envs_are_kept_with_their_provenance():
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["success"] == {"tworoom": 0.9} and out["plan_s"] == {"tworoom": 0.09}
    assert out["surprise"] == {"tworoom": "s"}
    assert out["runs"] == {"tworoom": {"date": "d0", "command": "c0"}}   # pusht is re-run: its old entry goes
