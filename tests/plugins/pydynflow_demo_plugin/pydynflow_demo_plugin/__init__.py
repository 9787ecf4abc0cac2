"""A pydynflow plugin for the test suite: actions found through entry points only."""
