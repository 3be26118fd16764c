"""The main demo (`make demo`): the shipped SmolLM2-135M-Instruct continues a few prompts greedily,
streaming tokens, then prints prefill time and decode tokens/s for each."""

from __future__ import annotations

import argparse
import time

PROMPTS = [
    "The capital of France is",
    "The three primary colors are",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped SmolLM2-135M GGUF)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--mesh", default=None, help="run tensor-parallel on a ROWSxCOLS mesh, e.g. 1x8")
    opts = parser.parse_args(argv)

    from mesh import MeshDevice, ensure_host_devices, parse_mesh_shape

    mesh_device = None
    if opts.mesh:
        shape = parse_mesh_shape(opts.mesh)
        ensure_host_devices(shape[0] * shape[1])  # before jax starts its backend
        mesh_device = MeshDevice(shape)

    from model.checkpoint import load_checkpoint
    from model.generator import Generator
    from model.streaming import TextStreamer

    t = time.perf_counter()
    ck = load_checkpoint(opts.model, max_seq_len=opts.max_seq_len)
    print(f"loaded {ck.args.model_name} ({ck.format}) in {time.perf_counter() - t:.1f} s" + (f", on a {opts.mesh} mesh" if mesh_device else ""))
    gen = Generator(ck.params, ck.args, ck.tokenizer, mesh_device=mesh_device)
    tok = ck.tokenizer
    for prompt in PROMPTS:
        print(f"\n>>> {prompt}", end="", flush=True)
        r = gen.generate(tok.encode(prompt), opts.max_new_tokens, on_token=TextStreamer(tok))
        print(
            f"\n    [{r.prompt_tokens} prompt tokens, prefill {r.prefill_s * 1e3:.0f} ms, "
            f"decode {r.decode_tokens_per_s:.1f} tokens/s, compile {r.compile_s:.1f} s]"
        )


if __name__ == "__main__":
    main()
