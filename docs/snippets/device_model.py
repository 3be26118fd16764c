# What one decode step of Llama-3.1-8B would cost on an N150 (one Wormhole) in tt_transformers' performance
# preset: each op's DRAM, NoC and compute time at its fidelity, plus dispatch; the largest sets the op's time.
from model.config import named_config
from model.perf_model import predict

args = named_config("Llama-3.1-8B")
step = predict(args, "N150", "decode", batch=1, context=1024, precision="performance")
print(f"{'op':18} {'bound':7} {'us a step':>9} {'DRAM MB a step':>14}")
for op in sorted(step["ops"], key=lambda r: -r["per_step_us"])[:6]:
    times = args.n_layers if op["where"] == "layer" else 1
    print(f"{op['op']:18} {op['bound']:7} {op['per_step_us']:9.0f} {op['dram_bytes'] * op['count'] * times / 1e6:14.1f}")
print(f"device {step['device_time_s'] * 1e3:.2f} ms + host {step['host_step_s'] * 1e3:.1f} ms "
      f"= {step['tokens_per_s_per_user']:.1f} tokens/s/user")
