"""What a bench or check run can end in, shared by its parts."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Skip(Exception):
    """A case or check that cannot run here (no torch, no GPU, a function the namespace
    under test lacks)."""
