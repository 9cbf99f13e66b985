import sys

from privagg.cli import main

sys.exit(main())
