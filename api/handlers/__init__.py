"""One module per API area; importing this package registers every handler."""

from . import misc, testhooks

__all__ = ["misc", "testhooks"]
