"""CPU: 256 training and 64 held-out episodes (<= 300 steps) of the walker2d medium PPO snapshot (session 16's,
from benchmarks/results/dmpc_keep.tar unpacked into runs/dmpc_keep) to /tmp/walker_eps.pkl, for the s17 fit checks."""
import json, time, pickle
import jax, numpy as np
from benchmarks import common
from papers.dmpc import data as data_lib, envs as envs_lib, experts
t0 = time.time()
config = common.load_config("dmpc/locomotion", "env=walker2d")
env = envs_lib.make("walker2d")
run = experts.load_run("runs/dmpc_keep/walker2d/expert.pkl", env, config.ppo)
keep = json.load(open("runs/dmpc_keep/walker2d.json"))
medium = keep["ppo"]["medium_snapshot"]
out = {}
for name, n, seed in (("train", 256, 7), ("held", 64, 123)):
    eps = data_lib.collect(env, run.policy_fn, run.params(medium), jax.random.key(seed), n, 300, chunk=64)
    out[name] = eps
    print(name, "collected", eps.lengths.sum(), "steps", f"{time.time()-t0:.0f}s", flush=True)
pickle.dump(out, open("/tmp/walker_eps.pkl", "wb"))
