"""The shared machinery of long jobs: atomic writes, resume checks, SIGTERM, CSV logs, devices."""

import signal
import threading

import pytest
import torch

from sarm.runtime import (
    PREEMPTED_EXIT_CODE,
    Preempted,
    TerminationFlag,
    atomic_paths,
    atomic_write,
    check_resumable,
    fingerprint,
    module_device,
    publish,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text_atomic("old", path)
    write_text_atomic("new ✓", path)
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_a_failing_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_write_can_produce_a_folder_and_removes_a_failed_one(tmp_path):
    def folder(tmp):
        tmp.mkdir()
        (tmp / "weights.bin").write_bytes(b"\0")

    out = atomic_write(tmp_path / "model", folder)
    assert (out / "weights.bin").read_bytes() == b"\0"

    def failing_folder(tmp):
        folder(tmp)
        raise ValueError("conversion failed")

    with pytest.raises(ValueError, match="conversion failed"):
        atomic_write(tmp_path / "other", failing_folder)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_paths_publish_all_files_or_none(tmp_path):
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    with pytest.raises(KeyError), atomic_paths(*paths) as temps:
        temps[0].write_text("a")
        raise KeyError("stream broke")
    assert list(tmp_path.iterdir()) == []
    with atomic_paths(*paths) as temps:
        for tmp, text in zip(temps, "ab", strict=True):
            tmp.write_text(text)
    assert [p.read_text() for p in paths] == ["a", "b"]


def test_publish_moves_a_finished_folder_into_place(tmp_path):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "manifest.json").write_text("{}")
    publish(tmp_path / "out.partial", tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_json_is_indented_sorted_and_ends_with_a_newline(tmp_path):
    write_json_atomic({"b": 1, "a": [1, 2]}, tmp_path / "x.json")
    assert (tmp_path / "x.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_csv_writer_uses_the_csv_module_defaults(tmp_path):
    rows = [{"step": 1, "loss": 0.5, "note": ""}, {"step": "2", "loss": 1e-8, "note": "a,b"}]
    path = write_csv_atomic(rows, tmp_path / "log.csv", ("step", "loss", "note"))
    assert path.read_bytes() == b'step,loss,note\r\n1,0.5,\r\n2,1e-08,"a,b"\r\n'
    with pytest.raises(ValueError, match="extra"):
        write_csv_atomic([{"step": 1, "extra": 2}], tmp_path / "bad.csv", ("step",))
    assert not (tmp_path / "bad.csv").exists()


def test_check_resumable_names_each_differing_key(tmp_path):
    saved = {"lr": 0.01, "seed": 0, "checkpoint_every": 10}
    check_resumable(saved, dict(saved), tmp_path)
    check_resumable(saved, {**saved, "checkpoint_every": 5}, tmp_path, may_change=("checkpoint_every",))
    with pytest.raises(ValueError) as error:
        check_resumable(saved, {**saved, "lr": 0.1, "new": True}, tmp_path / "checkpoint.pt")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'checkpoint.pt'} was written with other settings")
    assert "`lr`: saved 0.01, requested 0.1" in message and "`new`: saved None, requested True" in message
    assert "seed" not in message and message.endswith("delete it to start over")


def test_fingerprint_depends_on_content_not_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint([1], [2]) != fingerprint([1, 2]) != fingerprint([2, 1])
    assert len(fingerprint("x")) == 16


def test_termination_flag_catches_sigterm_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with TerminationFlag() as flag:
        assert not flag.requested
        signal.raise_signal(signal.SIGTERM)
        assert flag.requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_termination_flag_outside_the_main_thread_installs_nothing():
    seen = []

    def run():
        with TerminationFlag() as flag:
            seen.append((flag.requested, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(False, signal.getsignal(signal.SIGTERM))]


def test_preempted_exits_with_143():
    with pytest.raises(SystemExit) as stopped:
        raise Preempted(7)
    assert stopped.value.code == PREEMPTED_EXIT_CODE == 143 and stopped.value.step == 7


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
