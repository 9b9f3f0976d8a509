#!/usr/bin/env python3
"""Read a Kiln-written TensorBoard event file with the `tensorboard` package and check it.

The file comes from tests/test_tensorboard.cpp's reference scenario (write_reference_scenario there; keep the two
in step):

    KILN_TENSORBOARD_KEEP=/tmp/kiln-tb build-io/tests/test_tensorboard
    /tmp/kiln-io/bin/python tests/reference/check_tensorboard.py /tmp/kiln-tb

It loads the directory with tensorboard's EventAccumulator (the loader TensorBoard itself uses, which checks the
record CRCs) and checks every tag, step, wall time and float32 value. Exit status 0 on success.
"""
import sys


def main(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0})  # 0: keep every event
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    want_tags = sorted(["train/loss", "train/lr", "eval/loss", "big/step", "unicode/\u00fcnits"])
    assert tags == want_tags, f"tags {tags} != {want_tags}"

    def series(tag):
        return [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]

    loss = series("train/loss")
    assert len(loss) == 100, len(loss)
    for s, (step, wall, value) in enumerate(loss):
        assert step == s, (s, step)
        assert wall == 1700000000.0 + s, (s, wall)
        want = 3.5 - s / 64  # dyadic values: exact in float32
        assert value == want, (s, value, want)

    lr = series("train/lr")
    assert [e[0] for e in lr] == list(range(0, 100, 10)), lr
    for step, wall, value in lr:
        want = step / 16384
        assert value == want, (step, value, want)
        assert wall == 1700000000.5 + step

    ev = series("eval/loss")
    for step, _, value in ev:
        assert value == 4.0 - step / 32, (step, value)

    big = series("big/step")
    assert big == [(1099511627776, 1700000200.0, 1.25)], big
    uni = series("unicode/\u00fcnits")
    assert uni == [(7, 1700000201.0, -0.5)], uni

    import tensorboard
    print(f"check_tensorboard: OK ({len(tags)} tags, {sum(len(series(t)) for t in tags)} scalars) "
          f"with tensorboard {tensorboard.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_tensorboard.py <dir with a Kiln-written events.out.tfevents.* file>")
    main(sys.argv[1])
