"""``python -m scanner`` runs the syschangemon command line."""

import sys

from scanner.cli import main

sys.exit(main())
