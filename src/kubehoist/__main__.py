"""`python -m kubehoist` is the CLI."""

from kubehoist.cli import main

main()
