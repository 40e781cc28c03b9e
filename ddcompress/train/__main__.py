"""`python -m ddcompress.train ...`: the same as `ddc train ...`."""
from .cli import train_command

train_command()
