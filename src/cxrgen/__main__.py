"""``python -m cxrgen`` runs the command line."""

from cxrgen.cli import main

main()
