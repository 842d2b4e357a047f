import sys

from jmipose.cli import main

sys.exit(main())
