import sys

from kubediffusers.runner.dev.bench.cli import main

sys.exit(main())
