"""``python -m restr book --only`` with no match is an error listing the notebooks (an
empty selection used to fall back to every notebook)."""
from __future__ import annotations


def test_book_only_with_no_match_is_an_error_listing_the_notebooks(tmp_path, capsys, monkeypatch):
    from restr.book import runner as book
    from restr.commands.book import main as book_main

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    code = book_main(["--profile", "smoke", "--only", "99", "--no-site", "--data", str(data),
                      "--runs", str(tmp_path / "runs"), "--build", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--only 99 matches no notebook" in err
    for nb in book.notebook_paths():
        assert nb.name in err
    assert not data.exists() and not (tmp_path / "runs").exists()  # nothing was generated or run
    code = book_main(["--profile", "smoke", "--only", "01", "99", "--no-site", "--data", str(data)])
    assert code == 2 and "--only 99 matches no notebook" in capsys.readouterr().err
