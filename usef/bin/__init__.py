"""Command-line programs: ``usef <subcommand>`` (argument parsing, progress, exit codes)."""
