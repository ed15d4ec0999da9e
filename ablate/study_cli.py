"""`ablate study ...` subcommands. (Stub: filled in by the studies work.)"""


def add_study_commands(sub) -> None:
    """Add the `study` command group to the top-level subparsers."""
