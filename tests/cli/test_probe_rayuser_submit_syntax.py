"""``raystream submit`` of a job file that is not valid Python fails before anything is
uploaded, naming the file and the line. Before, the file was uploaded, the runtime env set up
and a driver started on the cluster, whose import then failed tens of seconds later, the
error naming the file by its path in the cluster's temp dir. No Ray is started here: the
dashboard address is one where nothing listens, which the submission never reaches."""

from __future__ import annotations

from raystream.jobs.cli import main
from tests.ports import free_port


def test_submit_of_a_job_file_with_a_syntax_error_stops_before_uploading(tmp_path, capsys):
    job = tmp_path / "typo_job.py"
    job.write_text("import raystream as rs\n\ndef build(env, args)\n    return None\n")
    assert main(["submit", str(job), "--address", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raystream: error: job file {str(job)!r} is not valid Python; nothing was submitted"), err
    assert f'File "{job}", line 3' in err and "SyntaxError: expected ':'" in err, err
    assert "Job Submission API" not in err and "Traceback" not in err, err


def test_a_valid_job_file_goes_on_to_the_submission(tmp_path, capsys):
    job = tmp_path / "fine_job.py"
    job.write_text("def build(env, args):\n    return None\n")
    address = f"http://127.0.0.1:{free_port()}"
    assert main(["submit", str(job), "--address", address]) == 2
    assert capsys.readouterr().err.startswith(f"raystream: error: cannot reach the Ray Job Submission API at {address!r}")
