"""The stage contract in-process: one line on stderr and exit 2 for bad input; library warnings
go to the stage log, never between the user and that line."""
from __future__ import annotations

import warnings

import pytest

from slimline.errors import SlimlineError


def test_library_warnings_go_to_the_stage_log_not_stderr(tmp_path, capsys):
    """The stage contract: stderr holds the one-line error only; a warning is in the log."""
    from slimline.stage import stage_main

    def main(args, params, log):
        warnings.warn("a library's multi-line\nwarning", UserWarning, stacklevel=1)
        raise SlimlineError("the one line")

    (tmp_path / "params.yaml").write_text("seed: 0\n")
    log = tmp_path / "stage.log"
    with pytest.raises(SystemExit) as exit:
        stage_main("demo", main, lambda parser: None,
                  ["--params", str(tmp_path / "params.yaml"), "--log", str(log)])
    captured = capsys.readouterr()
    assert exit.value.code == 2
    assert captured.err == "slimline demo: error: the one line\n"
    assert "a library's multi-line" in log.read_text()
