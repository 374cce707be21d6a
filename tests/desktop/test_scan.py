from __future__ import annotations

from pathlib import Path

from desktop.project.ignore import IgnoreRules
from desktop.project.scan import scan


def test_scan_respects_gitignore_enclaveignore_secrets_and_binaries(fixture_project: Path) -> None:
    result = scan(fixture_project, max_bytes=10_000)
    files = {f.rel for f in result.files}
    assert files == {
        ".enclaveignore",
        ".gitignore",
        "data.txt",  # the NUL byte is found when reading (read_text), not by the walk
        "keep.log",
        "src/shop/__init__.py",
        "src/shop/cart.py",
        "src/shop/prices.py",
        "web/app.js",
    }
    assert result.skipped[".env"] == "secret"
    assert result.skipped["deploy.pem"] == "secret"
    assert result.skipped["debug.log"] == "ignored"
    assert result.skipped["logo.bin"] == "binary"
    assert "build/out.py" not in files and "vendor/lib.py" not in files


def test_policy_patterns_cannot_be_reincluded(fixture_project: Path) -> None:
    (fixture_project / ".enclaveignore").write_text("!web/app.js\n!.env\n")
    result = scan(fixture_project, policy_patterns=["web/"])
    files = {f.rel for f in result.files}
    assert "web/app.js" not in files
    assert result.skipped["web"] == "policy"
    assert result.skipped[".env"] == "secret"


def test_huge_files_are_skipped(fixture_project: Path) -> None:
    (fixture_project / "big.py").write_text("x = 1\n" * 1000)
    result = scan(fixture_project, max_bytes=1000)
    assert result.skipped["big.py"] == "too_large"


def test_nested_gitignore_overrides_parent(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".gitignore").write_text("*.gen.py\n")
    (tmp_path / "a" / ".gitignore").write_text("!keep.gen.py\n/local.py\n")
    for rel in ("x.gen.py", "a/keep.gen.py", "a/drop.gen.py", "a/local.py", "a/b/local.py"):
        (tmp_path / rel).write_text("pass\n")
    files = {f.rel for f in scan(tmp_path).files}
    assert "x.gen.py" not in files and "a/drop.gen.py" not in files
    assert "a/keep.gen.py" in files
    # An anchored pattern applies relative to its own .gitignore only.
    assert "a/local.py" not in files and "a/b/local.py" in files


def test_is_excluded_checks_parent_directories(fixture_project: Path) -> None:
    rules = IgnoreRules(fixture_project)
    assert rules.is_excluded("build/deep/file.py")
    assert rules.is_excluded("src/.ssh/config")
    assert not rules.is_excluded("src/shop/cart.py")


def test_combined_patterns_match_exactly_what_pathspec_matches() -> None:
    import itertools
    import os

    import pathspec

    from desktop.project.ignore import SECRET_PATTERNS, _matcher

    names = ["a.py", ".env", "x.env", ".env.local", "server.pem", "id_rsa.pub", "secrets.yaml", "config.json",
             "credentials.json", ".ssh", ".aws", "config", ".docker", ".kube", "site-packages", "notes.key.txt", "env"]
    dirs = ["", "src/", ".ssh/", "deep/.aws/", ".docker/", ".kube/", "lib/site-packages/", "a/b/"]
    probes = [d + n for d, n in itertools.product(dirs, names)]
    probes += [p + "/" for p in probes]  # directories are probed with a trailing slash
    stdlib = os.path.dirname(os.__file__)
    walked = (os.path.relpath(os.path.join(d, f), stdlib).replace(os.sep, "/") for d, _, fs in os.walk(stdlib) for f in fs)
    probes += list(itertools.islice(walked, 2000))
    for lines in (SECRET_PATTERNS, ("site-packages/", "/build", "docs/**/*.md", "*.gen.*"), ("*.py", "!keep.py"), ()):
        spec = pathspec.GitIgnoreSpec.from_lines(list(lines))
        match = _matcher(spec)
        assert [p for p in probes if match(p)] == [p for p in probes if spec.match_file(p)], lines
    secrets = pathspec.GitIgnoreSpec.from_lines(list(SECRET_PATTERNS))
    assert _matcher(secrets) != secrets.match_file  # the combined expression, not the fallback
    assert any(_matcher(secrets)(p) for p in probes)
