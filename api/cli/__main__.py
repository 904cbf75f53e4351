"""`python -m api.cli`: the `checkpoint` command run as a module."""

import sys

from api.cli import main

sys.exit(main())
