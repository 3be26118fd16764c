"""Same-shape GGUF files (model.checkpoint.synthetic): a named model's shapes with random weights that ttjax, llama.cpp
and transformers all read, at the same bytes a weight as the TT formats they are compared with."""

import gguf
import numpy as np
import pytest

from model.checkpoint import load_args, open_checkpoint
from model.checkpoint.synthetic import synthetic_path, write_gguf
from model.config import named_config
from model.errors import ConfigError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Llama-3.2-1B's layout (GQA, tied head, llama3 rope) shrunk to a width that writes in a second."""
    args = named_config("Llama-3.2-1B", n_layers=2, dim=128, n_heads=4, n_kv_heads=2, head_dim=32, hidden_dim=256,
                        vocab_size=49152 + 100)
    folder = tmp_path_factory.mktemp("synthetic")
    return args, {fmt: write_gguf(args, fmt, folder / f"small-{fmt}.gguf", show_progress=False) for fmt in ("Q8_0", "Q4_0")}


def test_the_file_has_the_shapes_and_formats_asked_for(small):
    args, files = small
    for fmt, path in files.items():
        read = load_args(str(path))
        for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size", "tie_word_embeddings"):
            assert getattr(read, field) == getattr(args, field), field
        assert read.model_name == "Llama-3.2-1B"  # what the precision presets key on
        assert read.rope_freq_factors is not None and len(read.rope_freq_factors) == args.head_dim // 2  # llama3 scaling
        reader = gguf.GGUFReader(path)
        kinds = {t.name: t.tensor_type.name for t in reader.tensors}
        assert kinds["blk.0.ffn_gate.weight"] == fmt and kinds["token_embd.weight"] == fmt
        assert kinds["blk.1.attn_norm.weight"] == "F32" and "output.weight" not in kinds  # tied, as llama.cpp writes it
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        assert len(tokens) == args.vocab_size and tokens[-1] == "<|reserved_special_token_99|>"


def test_the_weights_are_random_and_the_text_tokenizes(small):
    args, files = small
    ck = open_checkpoint(str(files["Q8_0"]))
    assert ck.tokenizer.encode("The capital of France is")  # SmolLM2's vocabulary
    from model.params import param_specs

    import jax

    spec = jax.tree.leaves(param_specs(args))[3]
    w = np.asarray(ck.read(spec), np.float32)
    assert 0.015 < w.std() < 0.025 and np.abs(w.mean()) < 0.002  # N(0, 0.02) through Q8_0


def test_llama_cpp_reads_it(small):
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama

    _, files = small
    llm = Llama(model_path=str(files["Q4_0"]), n_ctx=64, n_threads=1, verbose=False)
    assert llm.n_vocab() == 49252
    assert len(llm("Hello", max_tokens=3, temperature=0)["choices"][0]["text"]) >= 0


def test_names_and_formats_are_checked(tmp_path):
    assert synthetic_path("llama-3.1-8b", "q4_0", folder=tmp_path).name == "Llama-3.1-8B-Q4_0.gguf"
    assert synthetic_path("Llama-3.2-1B", n_layers=2, folder=tmp_path).name == "Llama-3.2-1B-2L-Q8_0.gguf"
    with pytest.raises(ConfigError, match="'Q2_K' is not a GGUF format ttjax writes"):
        synthetic_path("Llama-3.2-1B", "Q2_K", folder=tmp_path)
    with pytest.raises(ConfigError, match="vocab_size 1000 is smaller than the tokenizer's 49152 tokens"):
        write_gguf(named_config("Llama-3.2-1B", vocab_size=1000, n_layers=1), "Q8_0", tmp_path / "x.gguf", show_progress=False)


def test_a_folder_that_cannot_be_written_is_one_sentence(tmp_path):
    from model.checkpoint.synthetic import synthetic_gguf

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"the same-shape file .*file/Llama-3\.2-1B-1L-Q8_0\.gguf cannot be written"):
        synthetic_gguf("Llama-3.2-1B", "Q8_0", n_layers=1, folder=blocker)
