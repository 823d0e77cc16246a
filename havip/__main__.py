"""`python -m havip`."""

import sys

from havip.cli import main

sys.exit(main())
