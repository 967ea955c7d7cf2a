"""Layer 8, the top of the core: the session (the owner's state) and every user action as one job (a
generator yielding progress and returning an immutable outcome), which the CLI and the window both call."""
