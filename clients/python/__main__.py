"""`python -m clients.python ...` is `f2f client ...`."""

import sys

from clients.python.cli import main

sys.exit(main())
