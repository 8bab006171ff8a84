import sys

from kubediffusers.runner.bench.cli import main

sys.exit(main())
