"""The CLI says what is wrong in one line and exits non-zero: never a traceback, never an empty
folder left behind (issue 40's newcomer found several)."""

import json

import pytest

from crowdtrain import cli


def fails(capsys, *argv: str) -> str:
    """Run the CLI; the one line it exits with."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--api", "http://127.0.0.1:9", "--admin-token", "t", *argv])
    message = str(exit_.value.code)
    assert exit_.value.code != 0 and "\n" not in message and "Traceback" not in message, message
    return message


def test_create_with_a_model_file_that_is_missing_garbage_or_not_a_model_says_which(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "batch-000000.bin").write_bytes(b"\0" * 8)
    (data / "dataset.json").write_text("{}")
    assert "not found" in fails(capsys, "create", "--model", str(tmp_path / "nope.json"), "--dataset", str(data))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x89PNG not json")
    assert "is not JSON" in fails(capsys, "create", "--model", str(garbage), "--dataset", str(data))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"modelTopology": {}}))
    assert "not a TF.js model.json" in fails(capsys, "create", "--model", str(wrong), "--dataset", str(data))
    shardless = tmp_path / "shardless.json"
    shardless.write_text(json.dumps({"weightsManifest": [{"paths": ["gone.bin"], "weights": []}]}))
    assert "cannot be read" in fails(capsys, "create", "--model", str(shardless), "--dataset", str(data))
    assert "needs --dataset" in fails(capsys, "create", "--model", str(wrong))


def test_download_of_a_version_the_job_has_not_made_leaves_no_folder(tmp_path, capsys, monkeypatch):
    class Known:
        def call(self, method, path, body=None):
            return {"version": 12, "model_url": "http://edge/jobs/j-1/versions/00000012/model.json"}

    monkeypatch.setattr(cli, "_api", lambda args: Known())
    out = tmp_path / "model"
    assert "versions 0 to 12, not 99999" in fails(capsys, "download", "j-1", str(out), "--version", "99999")
    assert not out.exists()


def test_ctrl_c_ends_with_a_blank_line_and_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "list_jobs", interrupted)
    monkeypatch.setattr(cli, "parser", lambda real=cli.parser: _with(real(), "jobs", interrupted))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--api", "http://127.0.0.1:9", "jobs"])
    assert exit_.value.code == 130 and "Traceback" not in capsys.readouterr().err


def _with(top, command, func):
    top.commands[command].set_defaults(func=func)
    return top


def test_delete_and_redrive_answer_in_a_line_and_in_json_on_request(monkeypatch, capsys):
    class Fake:
        def __init__(self):
            self.deletes = 0

        def call(self, method, path, body=None):
            if method == "DELETE":
                self.deletes += 1
                return {"deleted": self.deletes == 2, "records": 700, "files": 5}
            return {"redriven": {"tasks": 2, "results": 0}, "quarantined": {"tasks": 0, "results": 1}}

    monkeypatch.setattr(cli, "_api", lambda args: Fake())
    cli.main(["delete", "j-1"])
    out, err = capsys.readouterr()
    assert out == "deleted j-1: 1,400 records and 10 files\n" and "700 records" in err  # the first step's progress
    cli.main(["delete", "j-1", "--json"])
    assert json.loads(capsys.readouterr().out) == {"deleted": True, "records": 1400, "files": 10}
    cli.main(["redrive", "j-1"])
    assert capsys.readouterr().out.splitlines() == [
        "sent back to their queues: 2 tasks",
        "quarantined (redriven too often): 1 results; `crowdtrain redrive --quarantined j-1` lists them",
    ]
    cli.main(["redrive", "j-1", "--json"])
    assert json.loads(capsys.readouterr().out)["redriven"] == {"tasks": 2, "results": 0}


def test_a_stage_name_a_jobs_queue_name_would_not_fit_is_refused(capsys):
    """SQS names a queue in at most 80 characters: crowdtrain-STAGE-tasks-j-<12 hex> fits a 40-character stage."""
    for stage in ("x" * 41, "Dev", "dev_1"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["deploy", "--stage", stage])
        assert exit_.value.code == 2 and "a stage is 1-40 lower-case letters" in capsys.readouterr().err
    assert len(f"crowdtrain-{'x' * 40}-tasks-j-{'0' * 12}") <= 80


def test_deploy_reads_aws_region_and_says_plainly_when_there_are_no_credentials(monkeypatch, tmp_path, capsys):
    """A newcomer's finding: boto3 reads AWS_DEFAULT_REGION but not AWS_REGION, which the CLI's help names."""
    import argparse

    for name in (
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert cli.aws_session(argparse.Namespace(region=None)).region_name == "eu-west-1"
    message = fails(capsys, "deploy", "--stage", "dev")
    assert message.startswith("crowdtrain: no AWS credentials"), message


def test_watch_counts_tasks_not_batches_where_a_task_trains_several():
    """A newcomer's finding: the demo (32 batches a task) showed 4/8000 and a 25-hour ETA after 4 tasks."""
    spec = {"dataset": {"batches": 400}, "epochs": 20, "tasks_per_epoch": 12}
    assert cli.total_tasks(spec) == 240
    status = {
        "job_id": "j-1",
        "status": "running",
        "version": 4,
        "epoch": 0,
        "batches_done": 4,
        "spec": spec,
        "history": [{"loss": 3.0, "time": 0.0}, {"loss": 2.9, "time": 30.0}],
        "active_volunteers": 1,
        "discarded": {},
    }
    line = cli.describe(status)
    assert "tasks 4/240" in line and "eta 2360s" in line, line
