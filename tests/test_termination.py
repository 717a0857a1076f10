"""SIGTERM raises Terminated inside termination_raises (a foreign handler is left alone), and what
exit status and name each interruption gets."""

from __future__ import annotations

import os
import signal

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from bloodseg.termination import Terminated, exit_status_of, stopped_by, termination_raises


@pytest.fixture
def default_sigterm():
    """Python's default SIGTERM handling during the test, whatever the runner installed; restored after."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, saved)


def test_sigterm_raises_terminated_inside_the_block_and_the_default_is_back_after(default_sigterm):
    with pytest.raises(Terminated) as caught, termination_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes, at the latest here
            pass
    assert caught.value.signal_name == "SIGTERM" and caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_installed_before_is_left_alone(default_sigterm):
    """As submitit's: it ignores SIGTERM on purpose (its SIGUSR2 handler requeues the job)."""
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    with termination_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert seen == [signal.SIGTERM]


@pytest.mark.parametrize(
    ("error", "name", "status"),
    [
        (KeyboardInterrupt(), "Ctrl-C", 130),
        (Terminated(signal.SIGTERM), "SIGTERM", 143),
        (Terminated(signal.SIGHUP), "SIGHUP", 129),
        (SIGTERMException(), "SIGTERM", 143),  # Lightning's, raised at a batch boundary after SIGTERM
        (SystemExit(1), None, None),
        (ValueError("x"), None, None),
    ],
)
def test_each_interruption_has_its_name_and_exit_status(error, name, status):
    assert stopped_by(error) == name
    assert exit_status_of(error) == status
