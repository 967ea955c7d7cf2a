"""`python -m qtapp` opens the window; `python -m qtapp.cli` is the headless CLI."""

from qtapp.ui.app import main

raise SystemExit(main())
