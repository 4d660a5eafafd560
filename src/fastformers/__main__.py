"""`python -m fastformers`: the `fastformers` command."""

import sys

from .cli import main

sys.exit(main())
