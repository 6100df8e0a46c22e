import os, sys, json, jax, jax.numpy as jnp
from benchmarks import common
nbytes = 2 << 30
x = jnp.zeros((nbytes // 4,), jnp.float32)
old = 2 * x.nbytes / common.seconds_per_call(jax.jit(lambda x: x + 1.0), x, repeats=20, reduce="mean")
del x
new = common.measure_bandwidth(nbytes)
new20 = common.measure_bandwidth(nbytes, repeats=20)
mm = common.measure_matmul(8192)
print(json.dumps(dict(preallocate=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "default"), old_separate_calls=old, new_loop50=new, new_loop20=new20, matmul=mm)))
