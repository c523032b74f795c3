"""Request handlers: one module per route type (see forkd.handlers.registry), and their helpers.

The handler interface lives in forkd.handlers.base; routing (which route serves a path) in
forkd.routing.
"""
