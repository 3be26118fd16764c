"""The model interface tt-metal provides for its vLLM fork (models/tt_transformers/tt/generator_vllm.py).

vLLM owns the KV blocks: it asks for a cache of kv_cache_shape = (max_num_blocks, num_kv_heads,
block_size, head_size), keeps its own block manager, and passes each call a page_table
[batch, blocks_per_user] of the blocks it assigned. The model never allocates blocks itself.

    model = LlamaForCausalLM.initialize_vllm_model(hf_config, mesh_device, max_batch_size=32, max_seq_len=2048)
    kv_cache = model.allocate_kv_cache((num_blocks, n_kv_heads, block_size, head_dim), jnp.float32, n_layers)
    logits = model.prefill_forward(tokens, page_table, kv_cache, prompt_lens)      # [batch, vocab]
    logits = model.decode_forward(tokens, start_pos, page_table, kv_cache)         # [max_batch, 1, vocab]

prefill_forward: tokens [batch, max_prompt_len] zero-padded, prompt_lens [batch]; user i's K/V
go to the blocks of page_table row i; returns each user's last-token logits. decode_forward:
tokens [max_batch, 1] and start_pos [max_batch] (the position each token takes; -1 for an
unused slot), padded to the constant batch so one compiled step (the trace) is reused; with
read_from_device=False it returns the device output, for read_decode_output to fetch later
(async output processing). enable_trace=False runs the same step op by op (eager).
"""

from __future__ import annotations

import os

import numpy as np

from mesh import MeshDevice
from model.checkpoint import default_model_path, load_checkpoint
from model.errors import CheckpointError, ConfigError, KVCacheError
from model.serving.checks import check_tokens
from model.serving.generator import Generator
from model.config import PagedAttentionConfig


def _hf_field(cfg, name):
    return cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)


class LlamaForCausalLM:
    """tt-metal's vLLM model class. It holds a Generator (it is not one: vLLM's decode_forward takes
    (tokens, start_pos, page_table, kv_cache), the Generator's (tokens, current_pos, kv_cache, page_table))."""

    def __init__(self, generator: Generator):
        self.generator = generator

    @property
    def args(self):
        return self.generator.args

    @classmethod
    def initialize_vllm_model(
        cls, hf_config, mesh_device: MeshDevice | None, max_batch_size: int, max_seq_len: int | None = None, n_layers: int | None = None,
        *, model_path: str | None = None,
    ) -> LlamaForCausalLM:
        """Load the checkpoint (model_path, else the one hf_config was read from, else the shipped model) and check
        that it is the model hf_config describes. max_seq_len (vLLM's max_model_len) defaults to the model's context
        and may not exceed it."""
        path = _checkpoint_path(model_path or _hf_field(hf_config, "_name_or_path") or _hf_field(hf_config, "name_or_path"))
        ck = load_checkpoint(path, max_seq_len=None, max_batch_size=max_batch_size, n_layers=n_layers, progress=False)
        for field, ours in (("hidden_size", ck.args.dim), ("num_attention_heads", ck.args.n_heads), ("num_key_value_heads", ck.args.n_kv_heads)):
            theirs = _hf_field(hf_config, field)
            if theirs is not None and theirs != ours:
                raise ConfigError(f"hf_config has {field} = {theirs} but the checkpoint at {path} has {ours}.")
        context = ck.args.max_context_len
        if max_seq_len is not None and max_seq_len > context:
            raise ConfigError(f"max_seq_len = {max_seq_len} is past the model's trained context of {context} tokens.")
        args = ck.args.replace(max_seq_len=context if max_seq_len is None else max_seq_len)
        return cls(Generator(ck.params, args, ck.tokenizer, mesh_device=mesh_device))

    def allocate_kv_cache(self, kv_cache_shape=None, dtype=None, num_layers: int | None = None):
        """Per layer [K, V] block pools of kv_cache_shape (max_num_blocks, num_kv_heads, block_size, head_size)."""
        if kv_cache_shape is None:
            return self.generator.allocate_kv_cache()
        shape = tuple(kv_cache_shape)
        if len(shape) != 4 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
            raise KVCacheError(f"kv_cache_shape {shape} is not (max_num_blocks, num_kv_heads, block_size, head_size) of positive integers.")
        blocks, n_kv, block_size, head = shape
        if (n_kv, head) != (self.args.n_kv_heads, self.args.head_dim):
            raise KVCacheError(
                f"kv_cache_shape {tuple(kv_cache_shape)} has {n_kv} KV heads of {head}; the model has {self.args.n_kv_heads} of {self.args.head_dim}."
            )
        if num_layers is not None and num_layers != self.args.n_layers:
            raise KVCacheError(f"num_layers = {num_layers}, but the model has {self.args.n_layers} layers.")
        if dtype is not None and _dtype_name(dtype) != np.dtype(self.args.activation_dtype).name:
            raise KVCacheError(
                f"kv cache dtype {_dtype_name(dtype)} differs from this model's {np.dtype(self.args.activation_dtype).name} "
                "(the activation dtype its precision config sets; a block-float KV_CACHE rounds the values written)."
            )
        paged = PagedAttentionConfig(block_size=block_size, max_num_blocks=blocks)
        if paged != self.args.paged_attention_config:
            self.generator = self.generator.with_paged_attention(paged)
        # Lists, so a call can put its updated pools back into the caller's object (vLLM keeps one cache).
        return [list(layer) for layer in self.generator.allocate_kv_cache()]

    @staticmethod
    def _update(kv_cache, new):
        """The programs donate the pools; write their outputs back into the caller's cache lists."""
        for layer, (k, v) in zip(kv_cache, new):
            layer[0], layer[1] = k, v

    def prefill_forward(self, tokens, page_table, kv_cache, prompt_lens):
        """Prefill each user of the batch into its pages; returns last-token logits [batch, vocab] (host, float32)."""
        tokens, table, lens = np.asarray(tokens), np.asarray(page_table), np.asarray(prompt_lens)
        if tokens.ndim != 2:
            raise KVCacheError(f"tokens must be [batch, max_prompt_len], got shape {tokens.shape}.")
        if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
            raise KVCacheError(f"prompt_lens must be one integer per user, got {lens.dtype} values of shape {lens.shape}.")
        if not (len(tokens) == len(table) == len(lens)):
            raise KVCacheError(f"tokens ({len(tokens)}), page_table ({len(table)}) and prompt_lens ({len(lens)}) must have one row per user.")
        for user, n in enumerate(lens):  # every user before any is prefilled
            if not 1 <= n <= tokens.shape[1]:
                raise KVCacheError(f"prompt_lens[{user}] = {n} is outside 1..{tokens.shape[1]}, the tokens given per user.")
            check_tokens(tokens[user, :n], self.args.vocab_size, f"user {user}'s prompt")
        out = []
        for user, n in enumerate(lens):
            logits, new = self.generator.prefill_forward_text(tokens[user, :n], _tuples(kv_cache), user_id=user, page_table=table)
            self._update(kv_cache, new)
            out.append(np.asarray(logits))
        return np.stack(out)

    def decode_forward(self, tokens, start_pos, page_table, kv_cache, enable_trace: bool = True, read_from_device: bool = True):
        """One step for the whole (padded) batch. Returns logits [max_batch, 1, vocab] on the host, or, with
        read_from_device=False, the device output for read_decode_output."""
        tokens = np.asarray(tokens).reshape(-1)
        _, logits, _, new = self.generator.decode_forward(tokens, np.asarray(start_pos), _tuples(kv_cache), page_table, enable_trace=enable_trace)
        self._update(kv_cache, new)
        if not read_from_device:
            logits.copy_to_host_async()
            return logits
        return self.read_decode_output(logits, len(tokens))

    def read_decode_output(self, tt_out, unpadded_batch: int | None = None) -> np.ndarray:
        logits = self.generator.read(tt_out)
        return logits[: unpadded_batch or len(logits), None, :]


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

