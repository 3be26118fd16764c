"""Commands and harnesses: the `ttjax` command line (cli) and what it runs: the accuracy harness (top-1,
top-5, perplexity, per-layer PCC against transformers) and the communication report (collectives per layer
from the compiled program)."""
