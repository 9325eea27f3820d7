"""`python -m leadledger` is `leadledger`."""

from leadledger.cli import main

main()
