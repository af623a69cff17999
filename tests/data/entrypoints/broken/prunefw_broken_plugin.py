"""A plugin whose import fails: it needs a package that is not installed."""

import prunefw_test_dependency_that_is_not_installed  # noqa: F401

from prunefw import hookimpl


@hookimpl
def prunefw_register_criteria():
    return []
