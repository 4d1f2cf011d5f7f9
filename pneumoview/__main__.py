import sys

from pneumoview.cli import main

sys.exit(main())
