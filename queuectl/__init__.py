"""queuectl: a durable command-line background job queue for shell commands.

This module stays import-free so that `queuectl enqueue` and the man page
builder pay nothing for importing the package itself.
"""

__version__ = "0.1.0"
