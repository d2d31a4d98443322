"""``python -m captioner``: the same entry point as the ``captioner`` command."""

from captioner.cli import main

if __name__ == "__main__":
    main()
