"""The one exception type users see: its message is a single line naming the problem and the fix."""


class TinyLMError(Exception):
    """A problem with the user's input or environment, reported as one clear line (never a traceback)."""
