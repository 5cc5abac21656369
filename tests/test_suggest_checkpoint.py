"""eval.py / export.py without --checkpoint_path name the newest checkpoint
under ./outputs/ and the exact command that uses it (src.checkpoint.suggest_checkpoint)."""
import os

import pytest

import eval as eval_script
import export
from src.checkpoint import newest_run_checkpoint


def touch(path, age_s):
    """An (empty) file whose modification time is age_s seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """./outputs with an old run and a newer one (numbered, last and best checkpoints)."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "outputs" / "old_run" / "best.ckpt", 300)
    touch(tmp_path / "outputs" / "old_run" / "last.ckpt", 300)
    touch(tmp_path / "outputs" / "new_run" / "best.ckpt", 200)  # its best epoch was earlier
    touch(tmp_path / "outputs" / "new_run" / "last.ckpt", 100)
    touch(tmp_path / "outputs" / "new_run" / ".last.ckpt.partial-x.ckpt", 0)  # never suggested
    return tmp_path


def test_best_of_the_newest_run_is_chosen(runs):
    assert newest_run_checkpoint() == os.path.join("outputs", "new_run", "best.ckpt")
    touch(runs / "outputs" / "newest" / "ghostnetv2_100-epoch0001.ckpt", 10)  # no best.ckpt yet
    assert newest_run_checkpoint() == os.path.join("outputs", "newest",
                                                   "ghostnetv2_100-epoch0001.ckpt")


def test_eval_without_checkpoint_names_the_command(runs, capsys):
    assert eval_script.main(["--device_target", "CPU", "--data_path", "my data"]) == 2
    err = capsys.readouterr().err
    assert "the newest checkpoint under outputs/ is outputs/new_run/best.ckpt" in err
    assert ("python eval.py --device_target CPU --data_path 'my data' --checkpoint_path "
            "outputs/new_run/best.ckpt") in err


def test_export_without_checkpoint_names_the_command(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--file_format", "MINDIR"])
    assert exit_info.value.code == 2
    assert ("python export.py --file_format MINDIR --checkpoint_path outputs/new_run/best.ckpt"
            in capsys.readouterr().err)


def test_without_any_checkpoint_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        export.main([])
    err = capsys.readouterr().err
    assert f"no checkpoint under {tmp_path / 'outputs'}" in err
    assert "python train.py --config_path config/ghostnetv2_100_digits.yaml" in err
    assert "python convert_weights.py --src ck_ghostnetv2_10.pth.tar" in err
