"""`python -m lifecycle` is `leadledger` (kept for old scripts).

The one import of the entry points from inside `lifecycle`: this module is itself an entry
point, run only as `python -m lifecycle`, and nothing imports it.
"""

from leadledger.cli import main

main()
