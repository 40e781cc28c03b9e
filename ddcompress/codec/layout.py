"""How a file's tokens are cut into chunks (one model window each) and groups (one rANS stream
each). Pure integer bookkeeping, no torch: the container parser uses `layout_counts` to check a header
against its tables before any model work. `Layout` gives any group's chunks in O(group size) from the
counts alone, so a decoder never builds a list of every chunk from a header's claim (issue 22: a 17 KB
file claiming 2^40 tokens); `chunk_layout` and `group_layout` build the whole lists (linear in the
number of chunks) for encoders and tests that have the tokens in hand.
"""
from __future__ import annotations

from dataclasses import dataclass

# Chunks per group at most, for readers and writers alike (docs/FORMAT.md): a group is one rANS stream
# whose chunks are decoded together, step by step, so a decoder holds a whole group in one forward pass
# whatever its --batch (ddc-small on a CPU: ~23 MB a chunk of 1024 tokens, a 64-chunk group of random
# payloads peaked at 1.8 GB). 64 is the CUDA default group size (8 on a CPU); a larger group would save
# at most 9-12 bytes of framing per 64 chunks (~64K tokens).
MAX_GROUP_SIZE = 64


@dataclass(frozen=True)
class Chunk:
    index: int  # global chunk number (keys its unmasking order)
    start: int  # first token of the window
    width: int  # window length (L, or fewer for a file shorter than L)
    known: int  # leading window tokens already known (context), not coded here

    @property
    def coded(self) -> int:
        return self.width - self.known


def chunk_layout(n_tokens: int, L: int) -> list[Chunk]:
    """Full chunks [iL, iL+L); a remainder r is coded as the last r tokens of the window [n-L, n)
    (the earlier ones are context), or as one short chunk when n < L."""
    chunks = [Chunk(i, i * L, L, 0) for i in range(n_tokens // L)]
    rest = n_tokens % L
    if rest:
        if n_tokens >= L:
            chunks.append(Chunk(len(chunks), n_tokens - L, L, L - rest))
        else:
            chunks.append(Chunk(0, 0, n_tokens, 0))
    return chunks


def group_layout(chunks: list[Chunk], group_size: int) -> list[list[Chunk]]:
    """Chunks with nothing known go in order, `group_size` to a group; a tail chunk is a group of its own."""
    full = [c for c in chunks if c.known == 0]
    tail = [[c] for c in chunks if c.known]
    return [full[i : i + group_size] for i in range(0, len(full), group_size)] + tail


def layout_counts(n_tokens: int, L: int, group_size: int) -> tuple[int, int]:
    """(chunks, groups) of `chunk_layout` + `group_layout`, in O(1): for checking headers."""
    if n_tokens <= 0:
        return 0, 0
    full = n_tokens // L if n_tokens >= L else 1
    tail = 1 if n_tokens >= L and n_tokens % L else 0
    return full + tail, -(-full // group_size) + tail


class Layout:
    """The chunks and groups of n tokens at chunk length L, generated on demand: `group(k)` builds group
    k's chunks (O(group size)), nothing is stored per chunk. Groups are indexed 0 .. n_groups - 1 in
    coding order (full groups, then the tail); `group(k) == group_layout(chunk_layout(n, L), gs)[k]`."""

    def __init__(self, n_tokens: int, L: int, group_size: int):
        if n_tokens < 0 or L < 1 or group_size < 1:
            raise ValueError(f"no layout for {n_tokens} tokens, chunk length {L}, group size {group_size}")
        self.n_tokens, self.L, self.group_size = n_tokens, L, group_size
        self.n_chunks, self.n_groups = layout_counts(n_tokens, L, group_size)
        self.n_full = 0 if n_tokens == 0 else (n_tokens // L if n_tokens >= L else 1)  # chunks with nothing known
        self.n_full_groups = -(-self.n_full // group_size)

    def __len__(self) -> int:
        return self.n_groups

    def __getitem__(self, k: int) -> list[Chunk]:
        return self.group(k)

    def __iter__(self):
        return (self.group(k) for k in range(self.n_groups))

    def _check(self, k: int) -> None:
        if not 0 <= k < self.n_groups:
            raise IndexError(f"group {k} of {self.n_groups}")

    def first_chunk(self, k: int) -> int:
        """Global index of group k's first chunk."""
        self._check(k)
        return min(k * self.group_size, self.n_full)

    def chunks_in(self, k: int) -> int:
        """Number of chunks of group k, in O(1)."""
        self._check(k)
        if k >= self.n_full_groups:
            return 1  # the tail
        return min(self.group_size, self.n_full - k * self.group_size)

    def coded_in(self, k: int) -> int:
        """Tokens that group k codes (its chunks' widths less their known context), in O(1)."""
        self._check(k)
        if k >= self.n_full_groups:
            return self.n_tokens % self.L
        return self.chunks_in(k) * min(self.L, self.n_tokens)

    def shape(self, k: int) -> tuple[int, int]:
        """(width, known tokens) of group k's chunks (one shape per group), in O(1)."""
        self._check(k)
        if k >= self.n_full_groups:
            return self.L, self.L - self.n_tokens % self.L
        return min(self.L, self.n_tokens), 0

    def group(self, k: int) -> list[Chunk]:
        """Group k's chunks."""
        self._check(k)
        if k >= self.n_full_groups:  # the tail chunk: the last L tokens, only its last r coded
            r = self.n_tokens % self.L
            return [Chunk(self.n_full, self.n_tokens - self.L, self.L, self.L - r)]
        if self.n_tokens < self.L:
            return [Chunk(0, 0, self.n_tokens, 0)]
        first = k * self.group_size
        return [Chunk(i, i * self.L, self.L, 0) for i in range(first, first + self.chunks_in(k))]
