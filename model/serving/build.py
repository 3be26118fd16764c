"""build_generator: a model, a mesh, a precision and a cache layout -> a Generator, the one set-up that the
`ttjax` command, the demos and the benchmarks share.

Every option is checked against the model's config before any weight is read (a bad flag costs a
second, not a load): the cache length against the context the model was trained for, per-layer
precision overrides against its layers, the model against the mesh.
"""

from __future__ import annotations

from mesh import MeshDevice, ensure_host_devices, parse_mesh_shape, processes
from model.checkpoint import Checkpoint, CheckpointSource, load_params, open_checkpoint
from model.config import ModelArgs, PagedAttentionConfig
from model.errors import ConfigError, SequenceLengthError, TokenizerError
from model.precision import ModelOptimizations
from model.serving.generator import Generator
from model.sharding import mesh_args


def mesh_device_for(mesh) -> MeshDevice | None:
    """None, a MeshDevice, or ROWSxCOLS text ("1x8"), asking for enough host devices first."""
    group = processes.group()
    if mesh is None and group is not None and group.num_processes > 1:
        raise ConfigError(f"this process is one of {group.num_processes} (ttjax launch), which run one mesh together; give "
                          f"--mesh spanning all their devices ({group.num_processes * group.local_devices} host devices).")
    if mesh is None or isinstance(mesh, MeshDevice):
        return mesh
    shape = parse_mesh_shape(mesh)
    ensure_host_devices(shape[0] * shape[1])
    return MeshDevice(shape)


def check_context(config: ModelArgs, max_seq_len: int, allow_past_context: bool = False):
    """A cache longer than the context the model was trained for gives it positions it never saw (and decodes
    slower): refused unless asked for by name."""
    if max_seq_len > config.max_context_len and not allow_past_context:
        raise SequenceLengthError(
            f"--max-seq-len {max_seq_len} is past the model's trained context of {config.max_context_len} tokens; "
            "pass --allow-past-context to run there anyway."
        )


def generator_args(
    config: ModelArgs,
    *,
    mesh_device: MeshDevice | None = None,
    precision=None,
    overrides=(),
    paged=False,
    max_batch_size: int = 1,
    max_seq_len: int | None = None,
    ccl: str | None = None,
    norm: str | None = None,
    allow_past_context: bool = False,
    **changes,
) -> ModelArgs:
    """The ModelArgs a Generator runs with, each option checked against the model's config (no weights read).

    precision: None (the checkpoint's float32), a config name (float32, bfloat16, accuracy, performance, bfloat8_b,
    bfloat4_b) or a ModelOptimizations; overrides: (group, setting, layer) triples on top of it. paged: False, True
    (blocks of 32 for max_batch_size users of max_seq_len) or a PagedAttentionConfig. changes: other ModelArgs fields."""
    if max_seq_len is not None:
        check_context(config, max_seq_len, allow_past_context)
    args = config.replace(max_seq_len=max_seq_len or config.max_seq_len, max_batch_size=max_batch_size, **changes)
    opt = ModelOptimizations.named(precision, config.model_name) if isinstance(precision, str) else precision or args.optimizations
    for group, setting, layer in overrides:
        opt = opt.override(group, setting, layer)
    args = args.replace(optimizations=opt)  # checks per-layer overrides against the model's layers
    if paged is True:
        paged = PagedAttentionConfig(block_size=32, max_num_blocks=PagedAttentionConfig().blocks_for(args.max_seq_len) * max_batch_size)
    args = args.replace(paged_attention_config=paged or None)
    if mesh_device is not None:
        args = mesh_args(args, mesh_device, **{k: v for k, v in (("ccl", ccl), ("norm", norm)) if v is not None})
    return args


def build_generator(model=None, mesh=None, precision=None, paged=False, max_batch_size: int = 1, max_seq_len: int | None = None,
                    *, n_layers: int | None = None, needs_tokenizer: bool = False, progress: bool = False, seed: int = 0,
                    **options) -> Generator:
    """A Generator for model on mesh (None, "1x8" or a MeshDevice); the other options as generator_args. max_seq_len
    None keeps the checkpoint's (its context, for a path). needs_tokenizer: a checkpoint without one is an error (for
    commands that take text).

    model: a checkpoint path (None: the shipped SmolLM2) or an opened one (model.checkpoint.open_checkpoint), whose
    weights are then read one at a time straight into the precision and placement (model.checkpoint.load_params: a
    bfloat8_b model never exists in float32; on one device they go in the params cache when it is on); a
    ModelArgs, e.g. model.config.named_config("Llama-3.1-8B"), for dummy weights of its shapes (seed), made the same
    way; or a loaded Checkpoint, whose params the Generator converts."""
    mesh_device = mesh_device_for(mesh)
    ck = model if isinstance(model, Checkpoint) else None
    src = model if isinstance(model, CheckpointSource) else None
    if ck is not None:
        config = ck.args
    elif isinstance(model, ModelArgs):
        config = model
    else:
        if src is None:
            src = open_checkpoint(model, n_layers=n_layers)  # the config, tokenizer and tensor table; no weight read
        config = src.args
    if n_layers is not None:
        if not 1 <= n_layers <= config.n_layers:
            raise ConfigError(f"n_layers = {n_layers} is outside 1..{config.n_layers}, the layers of {config.model_name}.")
        config = config.replace(n_layers=n_layers)
    args = generator_args(config, mesh_device=mesh_device, precision=precision, paged=paged, max_batch_size=max_batch_size,
                          max_seq_len=max_seq_len, **options)
    if ck is not None:
        if needs_tokenizer:
            ck.require_tokenizer()
        return Generator(ck.params, args, ck.tokenizer, mesh_device=mesh_device)
    if src is not None and needs_tokenizer:
        src.require_tokenizer()
    if src is None and needs_tokenizer:
        raise TokenizerError(f"dummy weights of {config.model_name} come with no tokenizer, so text cannot be encoded.")
    with processes.working("loading"):  # hosts may load at different speeds (mesh.processes)
        params = load_params(src, args, mesh_device, seed=seed, progress=progress)
    return Generator(params, args, None if src is None else src.tokenizer, mesh_device=mesh_device)
