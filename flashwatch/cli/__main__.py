"""`python -m flashwatch.cli` runs the command line (used by tests and containers)."""

from flashwatch.cli import main

main()
