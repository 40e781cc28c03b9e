"""The exact integer denoiser the coder runs: fixed-point tables, the int8 GEMMs with exact sums, and the
denoiser's forward pass in exact arithmetic (the same integers on any machine)."""
