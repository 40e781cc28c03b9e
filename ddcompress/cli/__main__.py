"""`python -m ddcompress.cli`: the `ddc` command."""
from .commands import main

main()
