"""A plugin whose hook raises."""

from prunefw import hookimpl


@hookimpl
def prunefw_register_criteria():
    raise RuntimeError("raising plugin: criteria table is corrupt")
