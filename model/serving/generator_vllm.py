"""The model interface tt-metal provides for its vLLM fork (models/tt_transformers/tt/generator_vllm.py, over the
vLLM entry points of models/tt_transformers/tt/generator.py).

vLLM owns the KV blocks: it asks for a cache of kv_cache_shape = (max_num_blocks, num_kv_heads,
block_size, head_size), keeps its own block manager, and passes each call a page_table
[batch, blocks_per_user] of the blocks it assigned. The model never allocates blocks itself.

    model = LlamaForCausalLM.initialize_vllm_model(hf_config, mesh_device, max_batch_size=32, max_seq_len=2048)
    kv_cache = model.allocate_kv_cache((num_blocks, n_kv_heads, block_size, head_dim), ttjax.bfloat8_b, n_layers)
    logits = model.prefill_forward(tokens, page_table, kv_cache, prompt_lens)              # [batch, 1, vocab]
    logits = model.decode_forward(tokens, start_pos, page_table, kv_cache)                 # [max_batch, 1, vocab]
    tokens = model.decode_forward(tokens, start_pos, page_table, kv_cache, sampling_params=params)  # [max_batch]

prefill_forward: tokens [batch, max_prompt_len] zero-padded, prompt_lens [batch]; user i's K/V
go to the blocks of page_table row i; returns each user's last-token logits. decode_forward:
tokens [max_batch, 1] and start_pos [max_batch] (the position each token takes; -1 for an
unused slot), padded to the constant batch so one compiled step (the trace) is reused; with
read_from_device=False it returns the device output, for read_decode_output to fetch later
(async output processing). enable_trace=False runs the same step op by op (eager).

tt_data_parallel = n splits the mesh into n submeshes, each a whole copy of the model serving
max_batch_size / n users with its own KV cache (tt-metal's create_submeshes): kv_cache[i] is
submesh i's per-layer [K, V], batch slot s lives on submesh s // (max_batch_size / n).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from mesh import MeshDevice
from model.checkpoint import default_model_path, load_checkpoint
from model.config import PagedAttentionConfig
from model.errors import CheckpointError, ConfigError, KVCacheError
from model.precision import TensorGroup
from model.serving.checks import check_tokens, checked_positions
from model.serving.generator import Generator
from model.serving.sampling import SamplingBatch, SamplingParams
from ttjax.blockfloat import bfloat8_b, block_format
from ttjax.sampling import MAX_TOP_K


def _hf_field(cfg, name):
    return cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)


class LlamaForCausalLM:
    """tt-metal's vLLM model class. It holds one Generator per data-parallel submesh (it is not one: vLLM's
    decode_forward takes (tokens, start_pos, page_table, kv_cache), the Generator's (tokens, current_pos, kv_cache,
    page_table))."""

    def __init__(self, generators: list[Generator]):
        self.generators = list(generators)

    @property
    def generator(self) -> Generator:
        """The first submesh's Generator (the only one when tt_data_parallel = 1)."""
        return self.generators[0]

    @property
    def args(self):
        """One submesh's ModelArgs (max_batch_size is per submesh, as tt-metal's model_args[i])."""
        return self.generators[0].args

    @property
    def data_parallel(self) -> int:
        return len(self.generators)

    @property
    def max_batch_size(self) -> int:
        """Batch slots over every submesh."""
        return self.args.max_batch_size * self.data_parallel

    @classmethod
    def initialize_vllm_model(
        cls, hf_config, mesh_device: MeshDevice | None, max_batch_size: int, max_seq_len: int | None = None, n_layers: int | None = None,
        tt_data_parallel: int = 1, *, model_path: str | None = None,
    ) -> LlamaForCausalLM:
        """Load the checkpoint (model_path, else the one hf_config was read from, else the shipped model) and check
        that it is the model hf_config describes. max_seq_len (vLLM's max_model_len) defaults to the model's context
        and may not exceed it. tt_data_parallel splits mesh_device into that many submeshes of 1 x (devices / n), one
        model of max_batch_size / n users on each, as tt-metal's create_submeshes does."""
        submeshes = _submeshes(mesh_device, tt_data_parallel, max_batch_size)
        per_model = max_batch_size // tt_data_parallel
        path = _checkpoint_path(model_path or _hf_field(hf_config, "_name_or_path") or _hf_field(hf_config, "name_or_path"))
        ck = load_checkpoint(path, max_seq_len=None, max_batch_size=per_model, n_layers=n_layers, progress=False)
        for field, ours in (("hidden_size", ck.args.dim), ("num_attention_heads", ck.args.n_heads), ("num_key_value_heads", ck.args.n_kv_heads)):
            theirs = _hf_field(hf_config, field)
            if theirs is not None and theirs != ours:
                raise ConfigError(f"hf_config has {field} = {theirs} but the checkpoint at {path} has {ours}.")
        context = ck.args.max_context_len
        if max_seq_len is not None and max_seq_len > context:
            raise ConfigError(f"max_seq_len = {max_seq_len} is past the model's trained context of {context} tokens.")
        args = ck.args.replace(max_seq_len=context if max_seq_len is None else max_seq_len)
        return cls([Generator(ck.params, args, ck.tokenizer, mesh_device=sub) for sub in submeshes])

    def allocate_kv_cache(self, kv_cache_shape=None, dtype=bfloat8_b, num_layers: int | None = None):
        """kv_cache[submesh][layer] = [K, V], block pools of kv_cache_shape (max_num_blocks, num_kv_heads, block_size,
        head_size) on each submesh (None: the model's own layout). dtype is what the cache holds, bfloat8_b by default
        as in tt-metal's allocate_vllm_kv_cache: a block float (bfloat8_b, bfloat4_b) becomes every layer's KV_CACHE
        precision, so each K/V value written is rounded to it (kept decoded, in the activation dtype); a float dtype
        must be the activation dtype, written unrounded."""
        setting = self._kv_cache_setting(dtype)
        paged = self.args.paged_attention_config
        if kv_cache_shape is not None:
            shape = tuple(kv_cache_shape)
            if len(shape) != 4 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
                raise KVCacheError(f"kv_cache_shape {shape} is not (max_num_blocks, num_kv_heads, block_size, head_size) of positive integers.")
            blocks, n_kv, block_size, head = shape
            if (n_kv, head) != (self.args.n_kv_heads, self.args.head_dim):
                raise KVCacheError(
                    f"kv_cache_shape {shape} has {n_kv} KV heads of {head}; the model has {self.args.n_kv_heads} of {self.args.head_dim}."
                )
            paged = PagedAttentionConfig(block_size=block_size, max_num_blocks=blocks)
        if num_layers is not None and num_layers != self.args.n_layers:
            raise KVCacheError(f"num_layers = {num_layers}, but the model has {self.args.n_layers} layers.")
        self.generators = [_regenerated(g, _with_kv_cache_dtype(g.args.replace(paged_attention_config=paged), setting)) for g in self.generators]
        # Lists, so a call can put its updated pools back into the caller's object (vLLM keeps one cache).
        return [[list(layer) for layer in g.allocate_kv_cache()] for g in self.generators]

    def _kv_cache_setting(self, dtype) -> str:
        fmt = block_format(dtype)
        if fmt is not None:
            return fmt.name
        name, ours = _dtype_name(dtype), np.dtype(self.args.activation_dtype).name
        if name != ours:
            raise KVCacheError(
                f"kv cache dtype {name} differs from this model's {ours} (its activation dtype, in which the cache is kept); "
                "pass that, or a block float (bfloat8_b, bfloat4_b) to round the values written."
            )
        return name

    def _check_cache(self, kv_cache):
        n, layers = self.data_parallel, self.args.n_layers
        ok = isinstance(kv_cache, (list, tuple)) and len(kv_cache) == n
        ok = ok and all(isinstance(sub, (list, tuple)) and len(sub) == layers and all(len(kv) == 2 for kv in sub) for sub in kv_cache)
        if not ok:
            raise KVCacheError(
                f"kv_cache is not what allocate_kv_cache returns: one list per data-parallel submesh (here {n}), "
                f"each of {layers} per-layer [K, V] pairs."
            )

    @staticmethod
    def _update(kv_cache, new):
        """The programs donate the pools; write their outputs back into the caller's cache lists."""
        for layer, (k, v) in zip(kv_cache, new):
            layer[0], layer[1] = k, v

    def prefill_forward(self, tokens, page_table, kv_cache, prompt_lens=None, empty_slots=None) -> np.ndarray:
        """Prefill each user of the batch into its pages; returns the last prompt token's logits [batch, 1, vocab]
        (host, float32), as tt-metal's prefill_forward_text. prompt_lens None: every row is a whole prompt.
        empty_slots[i] is the batch slot row i fills (default i), which picks its submesh under data parallelism."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise KVCacheError(f"tokens must be [batch, max_prompt_len], got shape {tokens.shape}.")
        batch = len(tokens)
        lens = np.full(batch, tokens.shape[1]) if prompt_lens is None else np.asarray(prompt_lens)
        table = None if page_table is None else np.asarray(page_table)
        slots = np.arange(batch) if empty_slots is None else np.asarray(empty_slots)
        if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
            raise KVCacheError(f"prompt_lens must be one integer per user, got {lens.dtype} values of shape {lens.shape}.")
        rows = batch if table is None else len(table)
        if not (batch == rows == len(lens)):
            raise KVCacheError(f"tokens ({batch}), page_table ({rows}) and prompt_lens ({len(lens)}) must have one row per user.")
        if slots.shape != (batch,) or (slots.size and slots.dtype.kind not in "iu"):
            raise KVCacheError(f"empty_slots must be one integer slot per user ({batch}), got {slots.dtype} values of shape {slots.shape}.")
        bad = [int(s) for s in slots if not 0 <= s < self.max_batch_size]
        if bad:
            raise KVCacheError(f"empty_slots holds slot {bad[0]}, outside the batch slots 0..{self.max_batch_size - 1}.")
        self._check_cache(kv_cache)
        for user, n in enumerate(lens):  # every user before any is prefilled
            if not 1 <= n <= tokens.shape[1]:
                raise KVCacheError(f"prompt_lens[{user}] = {n} is outside 1..{tokens.shape[1]}, the tokens given per user.")
            check_tokens(tokens[user, :n], self.args.vocab_size, f"user {user}'s prompt")
        out = []
        for user, (slot, n) in enumerate(zip(slots, lens)):
            m, local = divmod(int(slot), self.args.max_batch_size)
            gen = self.generators[m]
            user_id = local if gen.paged is None else user  # a paged cache: the page-table row
            logits, new = gen.prefill_forward_text(tokens[user, :n], _tuples(kv_cache[m]), user_id=user_id, page_table=table)
            self._update(kv_cache[m], new)
            out.append(logits)
        # read back after every prefill is queued, as tt-metal gathers its prefill outputs at the end
        return np.stack([np.asarray(x, np.float32) for x in out])[:, None, :]

    def decode_forward(
        self, tokens, start_pos, page_table, kv_cache, enable_trace: bool = True, read_from_device: bool = True, sampling_params=None,
    ):
        """One step for the whole (padded) batch, as tt-metal's decode_forward_text. sampling_params None: logits
        [max_batch, 1, vocab]; given, the next tokens [max_batch], sampled on device (ttjax's top-k / top-p /
        temperature, model.serving.sampling; all greedy: argmax). With read_from_device=False, the device output (one
        per submesh) for read_decode_output."""
        tokens = np.asarray(tokens).reshape(-1)
        batch, n = len(tokens), self.data_parallel
        pos = checked_positions(start_pos, batch, self.args.max_seq_len)
        self._check_cache(kv_cache)
        if n > 1 and batch != self.max_batch_size:
            raise ConfigError(
                f"a decode batch of {batch} users; with tt_data_parallel = {n} it must be max_batch_size = {self.max_batch_size} "
                f"({self.args.max_batch_size} slots on each submesh)."
            )
        sampling = None if sampling_params is None else _sampling_batch(sampling_params, batch)
        part = batch // n
        outs = []
        for m, gen in enumerate(self.generators):
            rows = slice(m * part, (m + 1) * part)
            table = page_table if n == 1 or page_table is None else np.asarray(page_table)[rows]
            chunk = None if sampling is None else jax.tree.map(lambda a: a[rows], sampling)
            next_tokens, logits, _, new = gen.decode_forward(tokens[rows], pos[rows], _tuples(kv_cache[m]), table, sampling=chunk, enable_trace=enable_trace)
            self._update(kv_cache[m], new)
            outs.append(logits if sampling_params is None else next_tokens)
        if not read_from_device:
            for out in outs:
                out.copy_to_host_async()
            return outs
        return self.read_decode_output(outs, batch, is_tokens=sampling_params is not None)

    def read_decode_output(self, tt_out, unpadded_batch: int | None = None, is_tokens: bool = False) -> np.ndarray:
        """decode_forward's device output on the host, as tt-metal's read_decode_output(tt_out, unpadded_batch,
        is_tokens): tokens [unpadded_batch] int32 when is_tokens (the step had sampling_params), else logits
        [unpadded_batch, 1, vocab] float32; the submeshes' parts in slot order."""
        parts = list(tt_out) if isinstance(tt_out, (list, tuple)) else [tt_out]
        if len(parts) != self.data_parallel:
            raise ConfigError(f"tt_out has {len(parts)} parts; decode_forward gives one per data-parallel submesh ({self.data_parallel}).")
        host = [gen.read(part) for gen, part in zip(self.generators, parts)]
        kind, want = ("tokens [batch]", 1) if is_tokens else ("logits [batch, vocab]", 2)
        if any(h.ndim != want for h in host):
            held = "logits" if host[0].ndim == 2 else "tokens"
            raise ConfigError(
                f"read_decode_output(is_tokens={is_tokens}) expects {kind}, but tt_out holds {held} of shape {host[0].shape}: "
                "is_tokens must say whether decode_forward had sampling_params."
            )
        out = np.concatenate(host)
        n = len(out) if unpadded_batch is None else unpadded_batch
        if not 0 < n <= len(out):
            raise ConfigError(f"unpadded_batch = {n} is outside 1..{len(out)}, the users decode_forward ran.")
        return out[:n].astype(np.int32) if is_tokens else out[:n, None, :].astype(np.float32)


def _submeshes(mesh_device: MeshDevice | None, n, max_batch_size: int) -> list[MeshDevice | None]:
    """tt-metal's create_submeshes: n meshes of 1 x (devices / n), in the mesh's device order."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"tt_data_parallel = {n!r} must be a whole number of model copies, 1 or more.")
    if n == 1:
        return [mesh_device]
    if mesh_device is None:
        raise ConfigError(f"tt_data_parallel = {n} needs a mesh_device of {n} or more devices to split; without one the model runs on one device (1).")
    devices = mesh_device.get_num_devices()
    if devices % n:
        raise ConfigError(f"tt_data_parallel = {n} does not split the {mesh_device.shape[0]}x{mesh_device.shape[1]} mesh's {devices} devices into equal submeshes.")
    if max_batch_size % n:
        raise ConfigError(f"max_batch_size = {max_batch_size} does not split evenly over tt_data_parallel = {n} submeshes.")
    flat, size = list(mesh_device.devices.reshape(-1)), devices // n
    return [MeshDevice((1, size), devices=flat[i * size : (i + 1) * size]) for i in range(n)]


def _regenerated(gen: Generator, args) -> Generator:
    """gen over another KV-cache layout or precision: the same placed params, programs compiled anew."""
    if args == gen.args:
        return gen
    new = gen.with_paged_attention(args.paged_attention_config)
    if new.args != args:  # the KV_CACHE precision too
        new.args, new.placement = args, new.placement.with_args(args)
    return new


def _with_kv_cache_dtype(args, setting: str):
    """args with every layer's KV_CACHE precision set to setting (per-layer KV_CACHE overrides dropped)."""
    opt = args.optimizations
    if all(opt.get_tensor_dtype(TensorGroup.KV_CACHE, layer).value == setting for layer in range(args.n_layers)):
        return args
    opt = opt.override(TensorGroup.KV_CACHE, setting)
    kept = tuple(o for o in opt.layer_overrides if o[1] != TensorGroup.KV_CACHE)
    return args.replace(optimizations=dataclasses.replace(opt, layer_overrides=kept))


def _sampling_batch(sampling_params, batch: int) -> SamplingBatch | None:
    """sampling_params as the decode step takes them; None when every slot is greedy (argmax on device, as tt-metal
    does when every temperature is 0). A SamplingBatch is taken as is. Otherwise temperature, top_k, top_p and seed
    (ttjax's SamplingParams, or tt-metal's / vLLM's) are each a scalar for every user or a list, one per user, padded
    with greedy values (temperature 0, top_k 1) as tt-metal's format_sampling_params pads; top_k < 1 or None means no
    limit (32), seed None is 0."""
    if isinstance(sampling_params, SamplingBatch):
        if len(sampling_params.seed) != batch:
            raise ConfigError(f"the SamplingBatch has {len(sampling_params.seed)} slots for a decode batch of {batch}.")
        return sampling_params
    if not hasattr(sampling_params, "temperature"):
        raise ConfigError(f"sampling_params {sampling_params!r} has no temperature: pass a SamplingParams (or None for logits).")
    columns = {}
    for name, pad, unset in (("temperature", 0.0, 0.0), ("top_k", 1, MAX_TOP_K), ("top_p", 1.0, 1.0), ("seed", 0, 0)):
        value = getattr(sampling_params, name, None)
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * batch
        if len(values) > batch:
            raise ConfigError(f"sampling_params.{name} has {len(values)} values for a decode batch of {batch}.")
        columns[name] = [unset if v is None else v for v in values] + [pad] * (batch - len(values))
    columns["top_k"] = [MAX_TOP_K if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k < 1 else k for k in columns["top_k"]]
    users = [SamplingParams(**{name: col[i] for name, col in columns.items()}) for i in range(batch)]
    return None if all(u.greedy for u in users) else SamplingBatch.of(users)


def _dtype_name(dtype) -> str:
    """numpy, jax and torch dtypes (vLLM passes torch's) by name: float32, bfloat16, ..."""
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)

    for candidate in (dtype, str(dtype).removeprefix("torch.")):
        try:
            return np.dtype(candidate).name
        except TypeError:
            continue
    return str(dtype)


def _tuples(kv_cache):
    return tuple(tuple(layer) for layer in kv_cache)


def _checkpoint_path(path: str | None) -> str:
    """None: the shipped model. A folder that holds one .gguf file (what transformers records for a config read
    from a GGUF) is that file; anything else load_checkpoint reads or rejects by name."""
    if not path:
        return default_model_path()
    if os.path.isdir(path) and not {"config.json", "params.json"} & set(os.listdir(path)):
        ggufs = [f for f in os.listdir(path) if f.endswith(".gguf")]
        if len(ggufs) == 1:
            return os.path.join(path, ggufs[0])
        raise CheckpointError(f"{path} holds {len(ggufs)} .gguf files and no config.json / params.json; pass model_path.")
    return path
