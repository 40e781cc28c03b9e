"""`ddc bench`: the published corpora and their detokenizers, the measurement runs (NELBO bound,
bits/byte, the classical baselines) and their reports. Nothing here decides the bytes of a file."""
