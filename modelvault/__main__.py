import sys

from modelvault.cli import main

sys.exit(main())
