"""`python -m grpclab.load`: what a load Job's pod and a sandbox client run."""

import sys

from grpclab.load.runner import main

sys.exit(main())
