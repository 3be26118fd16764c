"""Choosing the next token: per-request options (SamplingParams, checked on the host), the batch of them
the decode step reads on device (SamplingBatch: one [batch] array per option, a slot per user), and
next_token, the one function that picks a token from logits, for the decode step and for the first
token a prefill gives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from model.errors import ConfigError
from ttjax.sampling import MAX_TOP_K, sample


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 (or top_k 1) is greedy. top_k is capped at 32 candidates, as TT's on-device sampling."""

    temperature: float = 0.0
    top_k: int = MAX_TOP_K
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise ConfigError(f"{name} = {value!r} must be a finite number.")
        for name in ("top_k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} = {value!r} must be an integer.")
        if not self.temperature >= 0:
            raise ConfigError(f"temperature = {self.temperature} must be 0 (greedy) or more.")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ConfigError(f"top_k = {self.top_k} is outside 1..{MAX_TOP_K} (on-device sampling keeps at most {MAX_TOP_K} candidates).")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p = {self.top_p} is outside (0, 1].")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed = {self.seed} is outside 0..2**32 - 1.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


GREEDY = SamplingParams()


@jax.tree_util.register_dataclass
@dataclass
class SamplingBatch:
    temperature: np.ndarray  # [batch] float32
    top_k: np.ndarray  # [batch] int32
    top_p: np.ndarray  # [batch] float32
    seed: np.ndarray  # [batch] uint32

    @classmethod
    def of(cls, params: list[SamplingParams]) -> SamplingBatch:
        return cls(
            temperature=np.array([p.temperature for p in params], np.float32),
            top_k=np.array([p.top_k for p in params], np.int32),
            top_p=np.array([p.top_p for p in params], np.float32),
            seed=np.array([p.seed for p in params], np.uint32),
        )

    @classmethod
    def greedy(cls, batch: int) -> SamplingBatch:
        return cls.of([GREEDY] * batch)

    def with_slot(self, slot: int, params: SamplingParams) -> SamplingBatch:
        """A copy with one slot's options replaced (a request admitted into that slot)."""
        out = SamplingBatch(*(np.array(a) for a in (self.temperature, self.top_k, self.top_p, self.seed)))
        out.temperature[slot], out.top_k[slot], out.top_p[slot], out.seed[slot] = params.temperature, params.top_k, params.top_p, params.seed
        return out


def next_token(logits, position, sampling: SamplingBatch | None = None):
    """logits [B, V] -> tokens [B] int32: argmax (sampling None), or sampled with each row's options. position
    [B] is the position the token will take (its random key is fold_in(seed, position))."""
    import jax.numpy as jnp

    if sampling is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return sample(logits, position, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=sampling.seed)


first_token = jax.jit(next_token)  # after a prefill: one compiled op, not a dozen dispatches
