"""``python -m scanner`` runs the syschangemon command line."""

import sys

from scanner.launch import main

sys.exit(main())
