"""An application module that fails to import (``pydynflow worker --app`` must exit 2)."""

raise RuntimeError("broken on purpose at import")
