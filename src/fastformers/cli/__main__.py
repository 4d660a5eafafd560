"""`python -m fastformers.cli`: the `fastformers` command."""

import sys

from . import main

sys.exit(main())
