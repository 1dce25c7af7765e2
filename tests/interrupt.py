"""For the tests that press Ctrl-C on a child process (``send_signal(SIGINT)``)."""

import signal


def sigint_as_usual() -> None:
    """In the child (``Popen(preexec_fn=sigint_as_usual)``): SIGINT's default action, which
    Python turns into KeyboardInterrupt. A shell that starts the tests in the background has
    them ignore SIGINT, and a child inherits that: Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
