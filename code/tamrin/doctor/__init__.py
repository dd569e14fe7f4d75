"""`python build.py doctor`: a preflight of everything a long run needs, in about a minute (plus the model
download and N timed steps when it runs on a GPU). One module per check; `run.py` orders them, passes what one
check learned to the next (`Facts`), keeps each to a time budget, and prints the table."""
from .run import run

__all__ = ["run"]
