"""Host-side state around the compiled programs: build_generator (the one set-up), the Generator (programs by
shape and the checks before them), placement (one device or a mesh), the programs themselves (prefill and the
decode step), the Engine (continuous batching, Request and RequestOutput, single-user generate), tt-metal's
vLLM interface, sampling options, page tables and streaming text."""
