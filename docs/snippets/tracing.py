# jax.jit is ttjax's trace capture: the first call records the program, later calls with the same shapes replay it
# without running a line of Python. So a Python print (a host action) runs once, at capture; jax.debug.print is
# part of the program and runs at every replay, as a device-side print would.
import jax
import jax.numpy as jnp

captures = []


@jax.jit
def decode_step(x, pos):
    captures.append(x.shape)  # Python: runs only while the trace is captured
    print("captured with", x)  # prints a tracer, once: it is not the value
    jax.debug.print("replayed at pos {}", pos)
    return jnp.tanh(x) + pos


x = jnp.ones((32, 8))
for pos in range(3):
    x = decode_step(x, pos)  # the output fed straight back as the next input, on device
jax.block_until_ready(x)
print(f"3 steps, {len(captures)} capture")
jax.block_until_ready(decode_step(jnp.ones((8, 8)), 0))  # a new batch shape is a new trace
print(f"after a batch of 8: {len(captures)} captures")
