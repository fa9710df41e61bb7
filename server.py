"""Entry point: ``python server.py [--host H] [--port P] [--data-dir D]`` runs a node."""

import sys

from gchat.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
