"""The command line: arguments -> library calls; errors -> messages and exit codes."""
