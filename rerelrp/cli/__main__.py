"""``python -m rerelrp.cli``: the same as the ``rerelrp`` command."""
import sys

from rerelrp.cli import main

sys.exit(main())
