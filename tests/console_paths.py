"""A command run twice: through the console entry point's fast path (tracelens.console) and through the typer CLI
(tracelens.cli.main). Tests of the fast paths require both runs to give the same exit code, stdout and stderr."""

from __future__ import annotations


def both(capture, argv):
    """(rc, out, err) of the fast path and of the typer command for the same arguments; ``capture`` is pytest's
    capsys or capsysbinary."""
    from tracelens import cli, console

    argv = [str(a) for a in argv]
    fast_args = {"dmesg": console.dmesg_fast_args, "info": console.info_fast_args}[argv[0]]
    assert fast_args(argv[1:]) is not None, "this case must take the fast path"
    rc1 = console.main(argv)
    out1, err1 = capture.readouterr()
    rc2 = cli.main(argv)
    out2, err2 = capture.readouterr()
    assert (rc1, out1, err1) == (rc2, out2, err2)
    return rc1, out1, err1
