"""`python -m difo.cli` is the `difo` command."""

from difo.cli import main

main()
