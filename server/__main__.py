"""`python -m server serve ...` / `python -m server client ...` (the same as `f2f serve` / `f2f client`)."""

import sys

from server.cli import main

sys.exit(main())
