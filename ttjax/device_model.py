"""What an op would cost on a Wormhole system: bytes from DRAM, bytes over the NoC and the ethernet, FLOPs at the op's
math fidelity, and a time from published hardware figures.

An op's device time is the largest of its DRAM, compute and NoC times (a kernel streams all three at
once), or for the small ops whose cost is set-up rather than data the kernel time tt-metal's perf
tests hold them to. On top of that it pays its dispatch: tt_transformers runs one command queue
without sub-devices, so an op's dispatch is not hidden behind the op before it. A collective is
priced with tt-metal's own fitted latency + bandwidth models. Every parameter is per device type
(the chip, the system's links and topology) and names its source; none is per model or per row.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.errors import OpConfigError
from ttjax.wormhole import TILE, WORMHOLE_B0, Chip

US = 1e-6
# Math passes per fidelity: LoFi 1, HiFi2 2, HiFi3 3, HiFi4 4 (tech_reports/matrix_engine/matrix_engine.md; GEMM_FLOPS.md's
# ideal cycles per tile-op 16 / 32 / 48 / 64).
FIDELITY_PASSES = {"LoFi": 1, "HiFi2": 2, "HiFi3": 3, "HiFi4": 4}

# Kernel times of the small decode ops, in us, at batch 32 on one Wormhole chip: tt-metal's unit perf targets for Llama
# (models/demos/llama3_subdevices/tests/tg_perf_unit_tests/test_llama_ops_perf_TG_llama.py) and, for the layout ops,
# the unfused decoder's targets (models/demos/llama3_subdevices/tests/test_decoder_device_perf.py, earlier version).
# Their data is a few tiles per core, so the kernel time is set-up, and batch 1 (padded to a tile) costs the same.
SMALL_OP_KERNEL_US = {
    "rms_norm": 12.5,  # LayerNorm
    "rms_norm_pre_all_gather": 10.67,  # PreRMS
    "rms_norm_post_all_gather": 6.13,  # PostRMS
    "nlp_create_qkv_heads_decode": 8.32,
    "rotary_embedding_llama": 4.15,  # RotaryEmbeddingLlamaFusedQK (q and k in one op)
    "paged_update_cache": 4.5,
    "nlp_concat_heads_decode": 6.07,
    "add": 3.1,  # BinaryDeviceOperation
    "mul": 4.11,  # Binary_Mult_Silu (the SiLU fused as an input activation)
    "embedding": 3.8,
    "sharded_to_interleaved": 4.02,
    "interleaved_to_sharded": 2.94,
    "reshard": 2.27,
}
SDPA_DECODE_KERNEL_US = 11.29  # ScaledDotProductAttentionDecode at a short cache (the same unit perf targets)


@dataclass(frozen=True)
class System:
    """A Wormhole system as tt_transformers runs it."""

    name: str
    mesh: tuple[int, int]  # tt_transformers' cluster_shape
    chip: Chip = WORMHOLE_B0
    # Ethernet links a collective uses per mesh axis: tt_transformers' ccl.py get_num_links, (axis 0, axis 1).
    links: tuple[int, int] = (1, 1)
    # Ring on 8 devices or a Galaxy, else line (tt_transformers' model_config ccl_topology).
    ring: bool = False
    # Dispatch an op pays when it cannot hide behind the previous kernel: the median "non-overlapped dispatch" of the 16
    # ops of the Llama-70B decoder layer (models/demos/llama3_70b_galaxy/tests/decoder_perf_targets_6u.json, measured with
    # TT_METAL_KERNELS_EARLY_RETURN=1), 6.60 us. tt_transformers runs one command queue without sub-devices or a weight
    # prefetcher, so it is charged to every op (the 0.6-0.9 us traced gaps of that file are the prefetcher's demo).
    dispatch_s: float = 6.60 * US
    # The device-to-device gap between traced ops (same file, op_to_op: 0.60-0.87 us).
    op_gap_s: float = 0.7 * US
    # Host time a decode step adds outside the device: replaying the trace, reading the token back and the demo's
    # Python loop. No tt-metal document states it: it is the one figure fitted to PERF.md, on its Llama-3.2-1B N150 row
    # (one chip, no collectives, the least weight traffic: the purest measure of overhead), and is the same for every
    # system. Without it the --compare median error is 25%; the README says so.
    host_step_s: float = 3.2e-3

    @property
    def num_devices(self) -> int:
        return self.mesh[0] * self.mesh[1]


SYSTEMS = {
    "N150": System("N150", (1, 1)),
    "N300": System("N300", (1, 2)),
    "T3K": System("T3K", (1, 8), ring=True),
    "TG": System("TG", (8, 4), links=(4, 3), ring=True),
}


def system(name: str) -> System:
    if name not in SYSTEMS:
        raise OpConfigError(f"device {name!r} is not one of {', '.join(SYSTEMS)}.")
    return SYSTEMS[name]


@dataclass
class OpCost:
    name: str
    count: int  # times a step runs it
    dram_bytes: float = 0.0
    noc_bytes: float = 0.0
    eth_bytes: float = 0.0
    flops: float = 0.0
    fidelity: str | None = None
    device_s: float = 0.0  # one run's kernel time
    bound: str = "dispatch"  # what sets the kernel time: DRAM, compute, NoC, ethernet, kernel (a small op's set-up)

    def time_s(self, sys: System) -> float:
        return self.count * (self.device_s + sys.dispatch_s + sys.op_gap_s)

    def as_dict(self, sys: System) -> dict:
        return {"op": self.name, "count": self.count, "dram_bytes": self.dram_bytes, "noc_bytes": self.noc_bytes,
                "eth_bytes": self.eth_bytes, "flops": self.flops, "fidelity": self.fidelity, "bound": self.bound,
                "device_us": self.device_s / US, "time_us": self.time_s(sys) / US}


def _bounded(cost: OpCost, times: dict[str, float]) -> OpCost:
    cost.bound, cost.device_s = max(times.items(), key=lambda kv: kv[1])
    return cost


def matmul_cost(name: str, sys: System, *, m: int, k: int, n: int, weight_bytes: float, act_bytes: float, out_bytes: float,
                cores: int, fidelity: str, dram_sharded: bool, act_in_dram: bool, count: int = 1) -> OpCost:
    """One device's share of a matmul: the weight (and a DRAM activation) read once, M padded to whole tiles, the
    activation sent to every core that needs it over the NoC."""
    chip = sys.chip
    padded_m = -(-m // TILE) * TILE  # the matrix engine works on whole tiles: decode's 1 row costs 32
    flops = 2.0 * padded_m * k * n
    dram = weight_bytes + (act_bytes + out_bytes if act_in_dram else 0)
    bw = chip.dram_sharded_bandwidth if dram_sharded else chip.dram_interleaved_bandwidth
    # DRAM-sharded: every bank's worker gathers all of the activation's K (unicast); the mcast configs send each block
    # of A and B once, multicast along a row or column of cores.
    noc = act_bytes * cores if dram_sharded else act_bytes + weight_bytes
    per_core_noc = chip.noc_bytes_per_cycle * chip.clock_hz
    rate = chip.flops_per_core_lofi / FIDELITY_PASSES[fidelity] * cores
    cost = OpCost(name, count, dram, noc, 0.0, flops, fidelity)
    return _bounded(cost, {"DRAM": dram / bw, "compute": flops / rate, "NoC": noc / (per_core_noc * cores)})


def small_op_cost(name: str, count: int = 1, dram_bytes: float = 0.0, sys: System | None = None) -> OpCost:
    """A decode op whose time is its kernel's set-up (norms, heads, rotary, cache update, eltwise, reshards)."""
    kernel = SMALL_OP_KERNEL_US[name] * US
    times = {"kernel": kernel}
    if dram_bytes and sys is not None:
        times["DRAM"] = dram_bytes / sys.chip.dram_interleaved_bandwidth
    return _bounded(OpCost(name, count, dram_bytes), times)


def sdpa_decode_cost(sys: System, kv_bytes: float, flops: float, count: int = 1) -> OpCost:
    """Flash decode: its set-up, or reading the users' K and V from the DRAM cache (interleaved), whichever is longer."""
    return _bounded(OpCost("sdpa_decode", count, kv_bytes, 0.0, 0.0, flops, "HiFi2"),
                    {"kernel": SDPA_DECODE_KERNEL_US * US, "DRAM": kv_bytes / sys.chip.dram_interleaved_bandwidth})


# tt-metal's fitted collective models, Wormhole, bfloat16, traced (tech_reports/CCLs/results/SUMMARY_wormhole_b0_bfloat16_6144.md,
# method in tech_reports/CCLs/CCL_bandwidth.md): latency in us from the device count N, and the bytes one device moves
# over the achieved bandwidth (GB/s) of one link.
CCL_MODELS = {
    ("all-reduce", False): (9.07, 5.82, "N-1", 10.9), ("all-reduce", True): (9.07, 5.25, "N/2", 18.4),
    ("all-gather", False): (4.47, 1.91, "N-1", 11.8), ("all-gather", True): (4.47, 2.50, "N/2", 20.8),
    ("reduce-scatter", False): (3.23, 3.97, "N-1", 11.1), ("reduce-scatter", True): (3.23, 3.06, "N/2", 16.7),
}


def ccl_cost(sys: System, kind: str, group: int, moved_bytes: float, axis: int, count: int = 1) -> OpCost:
    """A collective over group devices on one mesh axis, moved_bytes the bytes one device sends (comm-report's measure)."""
    ring = sys.ring and group == 8
    base, per, steps, gbps = CCL_MODELS[(kind, ring)]
    latency = (base + per * ((group - 1) if steps == "N-1" else group / 2)) * US
    links = sys.links[axis] if axis in (0, 1) else 1
    wire = moved_bytes / (gbps * 1e9 * links)
    cost = OpCost(kind, count, 0.0, 0.0, moved_bytes, 0.0, None)
    return _bounded(cost, {"ethernet": latency + wire})
