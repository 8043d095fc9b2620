"""A signal's exception raised while a module loads can be dropped by a C extension's initialisation: SIGXCPU that
went off in `abc.register`, called by numpy.random's Cython module as `verify` first drew samples, lost its
CpuTimeLimit and verify ran on to exit 0 (1 in 30 runs on a loaded machine; the CI failure of stop 35 in
test_hostile_thirtysecond). The handlers send such a signal again once the import is over.

Each case runs in a process of its own (the handlers are process-wide): a module whose loading signals its own
process and then drops every exception for a while, as the C code did, stands in for the extension."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from graphsurgery import launch

#: the module that drops the exception: its loading signals the process, then swallows what the handler raises
DROPPING_MODULE = """
import os, signal, time
os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
deadline = time.monotonic() + 0.3
while time.monotonic() < deadline:
    try:
        sum(range(1000))
    except BaseException:
        pass
"""

#: the process: the handler the command runs with, the import, then a pause in which the signal must arrive
SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from graphsurgery import launch
name = os.environ["SIGNAL"]
handler = {"SIGXCPU": launch.cpu_time_limit, "SIGTERM": launch.terminate,
           "SIGINT": launch._once(signal.default_int_handler)}[name]
signal.signal(getattr(signal, name), handler)
try:
    import dropping
    time.sleep(3)
except (launch.CpuTimeLimit, launch.Terminated, KeyboardInterrupt) as exc:
    print(type(exc).__name__, "dropping" in sys.modules)
else:
    print("lost")
"""

#: an object whose `__del__` signals the process and spins: Python cannot raise from there, it prints "Exception
#: ignored" (the unraisable hook); launch's hook sends the signal again
UNRAISABLE = """
import os, signal, sys, time
from graphsurgery import launch
signal.signal(signal.SIGXCPU, launch.cpu_time_limit)
sys.unraisablehook = launch._unraisable
class Signals:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGXCPU)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            sum(range(1000))
try:
    Signals()
    time.sleep(3)
except launch.CpuTimeLimit:
    print("CpuTimeLimit")
else:
    print("lost")
"""


@pytest.mark.parametrize("name, raised", [("SIGXCPU", "CpuTimeLimit"), ("SIGTERM", "Terminated"),
                                          ("SIGINT", "KeyboardInterrupt")])
def test_a_signal_while_a_module_loads_is_acted_on_after_it(tmp_path, name, raised):
    """The exception was raised inside the import and dropped there; now it is raised once the module has loaded."""
    (tmp_path / "dropping.py").write_text(DROPPING_MODULE)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SIGNAL": name})
    assert done.returncode == 0 and done.stdout.split() == [raised, "True"], (done.stdout, done.stderr)


def test_a_cpu_limit_dropped_in_a_del_is_sent_again():
    """SIGXCPU's CpuTimeLimit raised in a `__del__` was printed as "Exception ignored" and lost (Ctrl-C and SIGTERM
    were sent again already)."""
    done = subprocess.run([sys.executable, "-c", UNRAISABLE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["CpuTimeLimit"], (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr, done.stderr


def _frames(*files: str):
    """A chain of stand-in frames, innermost first, in code from `files`."""
    frame = None
    for name in reversed(files):
        frame = SimpleNamespace(f_code=SimpleNamespace(co_filename=name), f_back=frame)
    return frame


IMPORTING = ("/lib/abc.py", "<frozen importlib._bootstrap>", "/cli/verify.py")


def test_a_signal_inside_an_import_is_left_to_a_thread_that_sends_it_again(monkeypatch):
    started = []
    monkeypatch.setattr(launch._thread, "start_new_thread", lambda *args: started.append(args))
    assert launch._sent_again_later(signal.SIGXCPU, _frames(*IMPORTING))
    assert started == [(launch._send_later, (signal.SIGXCPU,))]
    assert not launch._sent_again_later(signal.SIGXCPU, _frames("/lib/abc.py", "/cli/verify.py"))
    assert len(started) == 1


def test_without_a_thread_to_spare_the_signal_is_acted_on_at_once(monkeypatch):
    """`ulimit -u` reached: no thread can send it later; the handler raises now, as before."""
    def refused(*args):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(launch._thread, "start_new_thread", refused)
    assert not launch._sent_again_later(signal.SIGXCPU, _frames(*IMPORTING))
    monkeypatch.setattr(launch.signal, "signal", lambda *args: None)  # the process's own handlers stay as they are
    with pytest.raises(launch.CpuTimeLimit):
        launch.cpu_time_limit(signal.SIGXCPU, _frames(*IMPORTING))
