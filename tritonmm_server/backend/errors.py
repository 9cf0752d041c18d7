"""The exception for bad request content.

A module of its own because both chat_params and chat_engine raise it, and the
Triton model catches it to answer INVALID_ARG rather than INTERNAL.
"""


class InputError(Exception):
    """The request itself is wrong; ``str(e)`` says what and where, fit for the end user."""
