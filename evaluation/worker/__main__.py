import sys

from evaluation.worker.core import main

sys.exit(main())
