"""HTTP edge and composition root: app factory, routing, handlers, the CLI."""
