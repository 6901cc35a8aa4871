"""``python -m molt`` is the ``molt`` command (Lightning's DDP launcher re-runs it in each process)."""
import sys

from .app.cli import main

if __name__ == "__main__":
    sys.exit(main())
