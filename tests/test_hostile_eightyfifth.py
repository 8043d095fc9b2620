"""Round 85: the Python API used as a library, from two threads at once.

The model-signature memo (`runners._SIGNATURES`) was changed without a lock: two threads evicting its oldest entry
at once raised StopIteration (or KeyError) out of `model_signature`. A command's reads (`modelio.one_command`) were
one record for the whole process: commands an application ran in two threads shared it, so one refused a right model
that another had read before it was rewritten, and the first to end dropped the other's hold (a model replaced after
it was read and checked then went to the runtime unrefused). The interleavings are forced (a barrier in the memo,
events between the commands), not left to luck."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from graphsurgery import modelio, runners
from graphsurgery.errors import GraphsurgeryError

from modelkit import pose_model


def _rewrite(model: Path, seed: int) -> None:
    """Another model moved over `model`, as an application that saves a new version would."""
    pose_model(model.with_name("new.onnx"), seed=seed)
    os.replace(model.with_name("new.onnx"), model)


def _in_thread(work) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run():
        try:
            work()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_two_threads_evicting_the_signature_memo_at_once(tmp_path, monkeypatch):
    models = [pose_model(tmp_path / f"m{i}.onnx", seed=i, output_name=f"out{i}") for i in range(3)]
    barrier = threading.Barrier(2, timeout=1)
    paused: set[int] = set()

    def meet():
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # the other thread waits for the lock (after the fix)
            pass

    class Interleaved(dict):
        """Both threads measure the memo before either evicts; each waits for the other after its eviction."""

        def __len__(self):
            size = dict.__len__(self)
            if threading.get_ident() not in paused:
                paused.add(threading.get_ident())
                meet()
            return size

        def __delitem__(self, key):
            dict.__delitem__(self, key)
            meet()

    monkeypatch.setattr(runners, "_SIGNATURES", {})
    monkeypatch.setattr(runners, "SIGNATURES_KEPT", 1)
    runners.model_signature(models[0])  # the one entry both threads evict
    monkeypatch.setattr(runners, "_SIGNATURES", Interleaved(runners._SIGNATURES))
    answers = {}
    started = [_in_thread(lambda m=m: answers.__setitem__(m, runners.model_signature(m))) for m in models[1:]]
    for thread, errors in started:
        thread.join(30)
        assert not errors, errors
    assert {m.name: s.outputs[0].name for m, s in answers.items()} == {"m1.onnx": "out1", "m2.onnx": "out2"}
    assert len(runners._SIGNATURES) == 1


def test_a_command_in_another_thread_does_not_refuse_a_model_rewritten_before_this_one_read_it(tmp_path):
    model = pose_model(tmp_path / "pose.onnx")
    read, done = threading.Event(), threading.Event()

    def first_command():
        with modelio.one_command():
            modelio.load_model(model)
            read.set()
            done.wait(30)

    thread, errors = _in_thread(first_command)
    try:
        assert read.wait(30)
        _rewrite(model, seed=1)  # between the two commands: the second reads the new model, as it is
        with modelio.one_command():
            loaded = modelio.load_model(model)  # was "the model file changed while the command ran"
            with modelio.read_by_path(model):
                pass
        assert loaded.identities[0] == modelio.file_identity(model)
    finally:
        done.set()
        thread.join(30)
    assert not errors, errors


def test_a_command_ending_in_another_thread_keeps_this_ones_hold(tmp_path):
    model = pose_model(tmp_path / "pose.onnx")
    started, end = threading.Event(), threading.Event()

    def other_command():
        with modelio.one_command():
            started.set()
            end.wait(30)

    thread, errors = _in_thread(other_command)
    assert started.wait(30)
    with modelio.one_command():
        modelio.load_model(model)
        end.set()
        thread.join(30)  # the other command has ended
        _rewrite(model, seed=2)
        with pytest.raises(GraphsurgeryError, match="changed while the command ran"), modelio.read_by_path(model):
            pass  # was taken: the runtime would have run a model no check saw
    assert not errors, errors


def test_commands_in_one_thread_still_nest_and_end_clean(tmp_path):
    """A command within a command keeps the outer one's reads; after the outer one ends nothing is held."""
    model = pose_model(tmp_path / "pose.onnx")
    with modelio.one_command():
        modelio.load_model(model)
        with modelio.one_command():
            pass
        _rewrite(model, seed=3)
        with pytest.raises(GraphsurgeryError, match="changed while the command ran"), modelio.read_by_path(model):
            pass
    with modelio.read_by_path(model):  # outside a command the file is taken as it is
        pass
    with modelio.one_command():
        modelio.load_model(model)  # a new command: the rewritten model as it is now
