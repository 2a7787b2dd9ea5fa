"""`python -m batch` is the same as the `scenario-batch` command."""

from batch.cli.main import main

raise SystemExit(main())
