"""The command line: ``rerelrp run`` learns a task sequence headless and writes its metrics (and, with
``--workspace``, the model); ``rerelrp predict`` classifies image files with a saved workspace;
``rerelrp report`` writes an explanation report of a saved workspace; ``rerelrp compare`` runs the
baselines beside ReReLRP; ``rerelrp unpack`` stores an .npz uncompressed so that it is read from disk;
``rerelrp undo`` takes a workspace back one task; ``rerelrp export`` / ``import`` carry one as a zip file."""
from __future__ import annotations

import sys

from rerelrp.cli.parser import build_parser, explicit_options
from rerelrp.errors import RerelrpError, StopRequested


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = explicit_options(sys.argv[1:] if argv is None else list(argv), args.command)
    try:
        return args.handler(args)
    except StopRequested as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; metrics.json holds every task completed so far", file=sys.stderr)
        return 130
    except RerelrpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
