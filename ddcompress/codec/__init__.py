"""Everything that decides a file's bytes: the tokenizer, the chunk layout, the levels (plan), the reveal
counts and orders (reveal, prng), the coder that runs the denoiser step by step, the mixing, rANS and the
container format (docs/FORMAT.md defines them all)."""
