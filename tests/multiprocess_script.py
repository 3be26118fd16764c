"""Run under `ttjax launch` by tests/test_multiprocess.py: a psum over every process's devices, step after step,
where process 1 misbehaves on purpose at step 5 (argv[1]: "hang" stops taking part while its heartbeats go on,
"slow" spends twice the collective timeout working() before going on)."""

import sys
import time

from mesh import processes

group = processes.join_from_env()

import jax  # noqa: E402  (after joining: the backend starts with this process's share of devices)
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

mode = sys.argv[1]
mesh = Mesh(np.array(jax.devices()).reshape(group.num_processes, -1), ("r", "c"))
spec = PartitionSpec("r", "c")
x = jax.make_array_from_callback(mesh.devices.shape + (4,), NamedSharding(mesh, spec), lambda index: np.ones((1, 1, 4), np.float32))
total = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a, ("r", "c")) / a.size, mesh=mesh, in_specs=spec, out_specs=spec))
for step in range(10):
    if group.process_id == 1 and step == 5:
        if mode == "hang":
            time.sleep(3600)
        with processes.working("a slow step"):
            time.sleep(2 * group.collective_timeout)
    with processes.waiting():
        x = total(x)
        np.asarray(x.addressable_shards[0].data)
print("done", flush=True)
processes.leave()
