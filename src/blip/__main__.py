import sys

from blip.cli import main

sys.exit(main())
