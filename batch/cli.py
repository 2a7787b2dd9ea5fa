"""Command line boundary (being built)."""


def main() -> int:
    return 0
