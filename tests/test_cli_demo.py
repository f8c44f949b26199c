"""`pprl demo` end to end, both paths, on a small population: the summary's own checks must hold."""

from click.testing import CliRunner

from pprl.cli import cli


def test_demo_links_and_decrypts_exact_sums(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--people", "120", "--platforms", "3", "--workdir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "all equal" in result.stdout and "F1" in result.stdout
    assert "1 record per ciphertext: 227.6 bytes per encrypted value" in result.stdout
    again = CliRunner().invoke(cli, ["demo", "--people", "50", "--platforms", "2", "--workdir", str(tmp_path / "d"),
                                     "--records-per-ciphertext", "5"])
    assert again.exit_code == 0, again.output  # a previous demo directory is replaced
    assert "all equal" in again.stdout and "5 records per ciphertext" in again.stdout


def test_exact_demo_refuses_records_per_ciphertext(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--exact", "--records-per-ciphertext", "2", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "applies to the CLK path" in result.stderr


def test_demo_refuses_a_foreign_workdir(tmp_path):
    (tmp_path / "mine.txt").write_text("not a demo")
    result = CliRunner().invoke(cli, ["demo", "--people", "50", "--workdir", str(tmp_path)])
    assert result.exit_code == 1 and "not a previous pprl demo" in result.stderr
    assert (tmp_path / "mine.txt").exists()


def test_exact_demo_matches_truth(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--exact", "--people", "120", "--platforms", "3",
                                      "--workdir", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "all equal" in result.stdout and "exact" in result.stdout


def test_lender_demo_tells_the_whole_story(tmp_path):
    w = tmp_path / "lender"
    result = CliRunner().invoke(cli, ["demo", "--lender", "--people", "300", "--workdir", str(w)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "month 2" in out and "all equal" in out
    for case in ("expired consent", "over quota", "unregistered lender"):
        assert f"refused   {case}" in out
    applicants = (w / "lender_applicants.csv").read_text(encoding="utf-8").splitlines()
    scores = (w / "lender_scores.csv").read_text(encoding="utf-8").splitlines()
    assert applicants[0] == "app_id,person" and len(applicants) == 31
    assert scores[0].startswith("app_id,found,contributors,repay_score_sum")
    found = [line for line in scores[1:] if line.split(",")[1] == "yes"]
    on_platforms = [line for line in applicants[1:] if line.split(",")[1]]
    assert len(found) == len(on_platforms) > 0  # people on no platform are "not found", never guessed
    bureau_files = b"".join(p.read_bytes() for p in (w / "bureau").rglob("*") if p.is_file())
    for line in (w / "bank_a" / "applicants.csv").read_text(encoding="utf-8").splitlines()[1:]:
        assert line.split(",")[1].encode() not in bureau_files  # no applicant ID reaches the bureau
