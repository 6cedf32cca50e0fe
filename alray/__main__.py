import sys

from alray.cli import main

sys.exit(main())
