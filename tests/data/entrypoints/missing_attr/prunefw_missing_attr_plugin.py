"""The entry point names an attribute this module does not define (no_such_object)."""

IMPORTED = True
