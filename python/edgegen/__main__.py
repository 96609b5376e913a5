import sys

from edgegen.cli import main

sys.exit(main())
