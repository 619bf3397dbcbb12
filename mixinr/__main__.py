import sys

from mixinr.cli import main

sys.exit(main())
