"""Entry-point clash scenario: two distributions declare the entry point 'clash'."""

from prunefw import hookimpl


@hookimpl
def prunefw_register_criteria():
    return []
