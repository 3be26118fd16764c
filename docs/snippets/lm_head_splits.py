# The LM head of Llama-3.1-8B ([4096, 128256]) split as tt_transformers splits it: the vocabulary over the devices,
# then each device's columns into chunks a DRAM-sharded matmul can hold (max_columns_per_device_lm_head).
from mesh import ensure_host_devices

ensure_host_devices(8)

from mesh import MeshDevice  # noqa: E402
from model.config import named_config  # noqa: E402
from model.sharding import mesh_args  # noqa: E402

for shape in [(1, 1), (1, 2), (1, 8)]:
    lay = mesh_args(named_config("Llama-3.1-8B", n_layers=1), MeshDevice(shape)).layout
    print(f"{shape[0]}x{shape[1]}: {lay.vocab_local} columns a device, at most {lay.max_columns_per_device_lm_head} "
          f"a chunk -> chunks {lay.lm_head_splits}")
