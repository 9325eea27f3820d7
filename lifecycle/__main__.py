"""`python -m lifecycle` is `leadledger`."""

from lifecycle.cli import main

main()
