"""The ``dermbench`` command line: one entry point, one module per subcommand."""


class CliError(Exception):
    """An error whose message is the whole story: printed without a traceback."""
