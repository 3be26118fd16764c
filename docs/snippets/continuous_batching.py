# Continuous batching over a paged KV cache with the shipped SmolLM2-135M: 5 requests share 2 decode slots. Each
# step admits waiting requests into free slots (a single-user prefill into the blocks its page table names), decodes
# every slot at its own position, and retires finished requests, returning their blocks to the pool.
from model.config import PagedAttentionConfig
from model.serving.build import build_generator
from model.serving.engine import Engine, Request, generate

gen = build_generator(max_batch_size=2, max_seq_len=256, paged=PagedAttentionConfig(block_size=64, max_num_blocks=8))
tok = gen.tokenizer
prompts = ["The capital of France is", "Water boils at", "The largest planet is", "One, two, three,", "Paris is"]
requests = [Request(tok.encode(p), max_new_tokens=6 + 2 * i, stop_at_eos=False) for i, p in enumerate(prompts)]
for out in Engine(gen).run(requests):
    alone = generate(gen, out.request.prompt, out.request.max_new_tokens, stop_at_eos=False).tokens
    print(f"slot {out.slot}: {tok.decode(list(out.request.prompt))!r} -> {out.text!r} "
          f"({out.finish_reason}; same tokens as alone: {out.tokens == alone})")
