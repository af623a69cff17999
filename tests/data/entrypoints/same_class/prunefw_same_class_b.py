"""Same-class scenario, distribution b: re-registers a's class (the very same object)."""

from prunefw_same_class_a import SharedCriterion

from prunefw import hookimpl


@hookimpl
def prunefw_register_criteria():
    return [SharedCriterion]
