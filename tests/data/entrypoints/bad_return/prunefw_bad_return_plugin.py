"""A plugin whose hook returns something that is not a criterion class."""

from prunefw import hookimpl


class NotACriterion:
    name = "not-a-criterion"


@hookimpl
def prunefw_register_criteria():
    return [NotACriterion]
