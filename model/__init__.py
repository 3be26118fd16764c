"""model: Llama as pure functions of (params, inputs, cache) -> (outputs, cache), flat and named as
tt_transformers names them (config, precision, model_config, params, sharding, ccl, embedding, rope, norm,
attention, mlp, decoder, lm_head, transformer, kv_cache, buckets, errors). Beside it, in layers above:
checkpoint/ (files -> params, tokenizers), serving/ (the Generator, the Engine, the vLLM interface) and
tools/ (the `ttjax` command and its harnesses)."""
