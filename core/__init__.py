"""paperclub core: the library every paper shares (never imports papers/).

Parameters carry *logical* axis names (`nnx.Param(..., sharding_names=("embed", "mlp"))`); `core.sharding`
maps them onto a mesh when the trainer places the state. Flax's eager sharding would instead demand a mesh
at construction time, so the framework turns it off once, here.
"""

from flax import nnx as _nnx

_nnx.use_eager_sharding(False)
