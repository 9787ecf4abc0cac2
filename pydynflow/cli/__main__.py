"""``python -m pydynflow.cli``: the ``pydynflow`` command line without its console script."""

from pydynflow.cli import main

if __name__ == "__main__":
    main()
