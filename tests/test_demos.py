"""The text demo on the real model over a prompt file of its format (the chat demo runs in test_readme, as the README
shows it)."""

import json
import re

from demos import demo


def test_text_demo_serves_a_batch_of_prompts(tmp_path, capsys):
    prompts = [{"prompt": "What is the capital of France?"}, {"prompt": "Name a primary color."},
               {"prompt": "What is 2 plus 2?", "max_length": 12}]
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(prompts))
    assert demo.main(["--input", str(path), "--batch-size", "2", "--max-new-tokens", "12", "--max-seq-len", "128"]) == 0
    out = capsys.readouterr().out
    assert "3 prompts, 2 slots" in out
    assert all(f"[user {i}]" in out for i in range(3))
    assert "[user 2] What is 2 pl\n" in out  # max_length cuts the prompt, in characters
    assert re.search(r"time to first token: median \d+ ms", out) and re.search(r"decode: median [\d.]+ tokens/s/user", out)
    assert "Paris" in out


def test_shipped_prompt_file_is_valid():
    assert len(demo.load_prompts(demo.DEFAULT_INPUT)) == 10
