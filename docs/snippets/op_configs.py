# tt_transformers' program and memory configs for Llama-3.1-8B decode on one Wormhole (N150), each checked as the
# chip checks it: blocks against the grid, the destination register, shard specs, and every core's L1.
import dataclasses

from model.config import named_config
from model.op_configs import op_configs, validate
from ttjax import OpConfigError

args = named_config("Llama-3.1-8B")
ops = op_configs(args, "N150", "decode", precision="performance")
for op in ops:
    use = validate(op)  # raises OpConfigError where the chip would refuse the op
    if op.sdpa is not None:
        print(f"{op.name:11} SDPA decode on a {op.sdpa[3].x}x{op.sdpa[3].y} grid")
        continue
    shard = op.a.memory_config.shard_spec
    print(f"{op.name:11} {type(op.program_config).__name__.removeprefix('MatmulMultiCoreReuseMultiCast'):24} "
          f"activation on {shard.num_cores() if shard else 'no'} cores, weight over {use.core_range}, "
          f"circular buffers {use.circular_buffer_bytes / 1024:.0f} KiB a core")

w1 = next(op for op in ops if op.name.startswith("w1"))
broken = dataclasses.replace(w1, program_config=dataclasses.replace(w1.program_config, per_core_M=2))
try:
    validate(broken)
except OpConfigError as e:
    print("per_core_M=2 refused:", e)
