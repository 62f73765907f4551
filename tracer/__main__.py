"""`python -m tracer run JOB.json`: see tracer/runner.py."""
import sys

from .runner import main

sys.exit(main())
