"""benchmarks.plan_lewm --previous: one env per command still lands in one lewm.json."""

from benchmarks import plan_lewm


def test_previous_results_of_other_envs_are_kept_with_their_provenance():
    previous = dict(date="d0", command="c0", success=dict(tworoom=0.9, pusht=0.1),
                    plan_s=dict(tworoom=0.09, pusht=0.2), surprise=dict(tworoom="s"),
                    runs=dict(pusht=dict(date="d-1", command="c-1")))
    out = dict(date="d1", command="c1", success={}, plan_s={})
    plan_lewm.keep_other_envs(out, previous, ran={"pusht"})
    assert out["success"] == {"tworoom": 0.9} and out["plan_s"] == {"tworoom": 0.09}
    assert out["surprise"] == {"tworoom": "s"}
    assert out["runs"] == {"tworoom": {"date": "d0", "command": "c0"}}   # pusht is re-run: its old entry goes
