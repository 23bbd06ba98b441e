"""The `bidirmoe` command line and the bundled datasets."""

import os
import subprocess
import sys

import pytest

from bidirmoe import datasets


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bidirmoe", *args], capture_output=True, text=True, timeout=timeout)


def test_bundled_datasets_resolve_by_name():
    assert os.path.getsize(datasets.path("text8-sample")) > 1_000_000
    with open(datasets.path("google"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert sum(1 for l in lines if l.startswith(":")) == 14
    assert sum(1 for l in lines if not l.startswith(":")) == 19544
    assert datasets.resolve("google") == datasets.path("google")
    assert datasets.resolve("some/file.txt") == "some/file.txt"
    with pytest.raises(KeyError, match="unknown dataset 'nope'; known: "):
        datasets.path("nope")


def test_demo_trains_and_prints_neighbours_and_analogy_score():
    r = run_cli("demo", "--epochs", "1", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "king" in r.stdout and "->" in r.stdout
    assert "Google analogies" in r.stdout and "%" in r.stdout
    # One epoch on 2.1M words learns something: random vectors answer ~0 of ~10k questions.
    pct = float(r.stdout.split("Google analogies (restrict_vocab=30000): ")[1].split(" %")[0])
    assert pct > 0.05


def test_help_on_every_subcommand():
    for args in (["--help"], ["demo", "--help"]):
        r = run_cli(*args)
        assert r.returncode == 0 and "usage:" in r.stdout


def test_usage_errors_exit_2_without_traceback():
    r = run_cli("no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("demo", "--epochs", "many")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_bad_values_exit_1_with_one_line():
    r = run_cli("demo", "--epochs", "-1")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "epochs" in r.stderr
