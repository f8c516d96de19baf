"""`python -m fastseg.cli.shard_entry` runs fastseg-shard without the installed script."""
from .shard import entry

entry()
