"""FlashWatch: streaming surveillance analytics on a re-queryable visual memory.

This package is the composition root (DESIGN.md §2): typed config, messages, bus,
SQL registry, REST API, CLI and role runners. Model math lives in the components.
"""

__version__ = "0.1.0"
