"""model: Llama as pure functions of (params, inputs, cache) -> (outputs, cache), its checkpoints,
tokenizer, generator and command line."""
