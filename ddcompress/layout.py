"""How a file's tokens are cut into chunks (one model window each) and groups (one rANS stream
each). Pure integer bookkeeping, no torch: the container parser uses `layout_counts` to check a header
against its tables before any model work, and every function here is linear in the number of chunks.
"""
from __future__ import annotations

from dataclasses import dataclass


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
