"""Streaming a stage's output: log lines at once, progress redraws throttled, the tail kept."""

import io

from mrt_lib.streaming import stream_lines


class Clock:
    def __init__(self, times):
        self.times = iter(times)

    def __call__(self):
        return next(self.times)


def test_lines_pass_at_once_and_progress_redraws_are_throttled():
    out = b"start\nbar 1%\rbar 2%\rbar 3%\rbar 100%\ndone\r\nno end"
    seen = []
    # redraws at t=0 (shown), t=5 (too soon), t=12 (shown); "bar 100%\n" is a line
    tail = stream_lines(io.BytesIO(out), seen.append, every_s=10, clock=Clock([0, 0, 5, 12, 12]))
    assert seen == ["start", "bar 1%", "bar 3%", "bar 100%", "done", "no end"]
    assert tail == out.decode()


def test_the_last_redraw_is_shown_and_the_tail_is_bounded():
    seen = []
    tail = stream_lines(io.BytesIO(b"x" * 50 + b"\nstep 1\rstep 2\r"), seen.append, every_s=60, tail_chars=10,
                        clock=Clock([0, 1, 1]))
    assert seen == ["x" * 50, "step 1", "step 2"]  # step 2 came too soon, but it is the last state
    assert tail == "\nstep 1\rstep 2\r"[-10:]


def test_bad_bytes_do_not_stop_the_stream():
    seen = []
    stream_lines(io.BytesIO(b"caf\xe9\nok\n"), seen.append)
    assert seen == ["caf\ufffd", "ok"]
