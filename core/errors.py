"""The one exception type for mistakes a user can make (bad prompt, missing file, ...).

Scripts catch it, print its message as one line on stderr and exit with status 2.
"""


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""
