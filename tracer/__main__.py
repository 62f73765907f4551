"""`python -m tracer run JOB.json` or `python -m tracer serve JOB.json`: see tracer/runner.py."""
import sys

from .runner import main

sys.exit(main())
