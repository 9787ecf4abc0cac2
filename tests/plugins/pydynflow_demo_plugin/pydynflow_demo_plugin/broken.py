"""An entry point whose module fails to import: a world logs it and goes on without it."""

raise RuntimeError("the demo plugin's broken module fails on purpose")
