"""A table of user mistakes, each through the real CLI: one line on stderr, exit 2, no traceback."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

GOOD_ROWS = "".join(f"2020-01-01 {h:02d}:00:00,{h}.5,{2 * h}\n" for h in range(24))

FILES = {
    "empty": b"",
    "header_only": b"date,a,b\n",
    "binary": bytes(range(256)) * 4,
    "pipes": ("date|a|b\n" + GOOD_ROWS.replace(",", "|")).encode(),
    "no_date": ("time,a,b\n" + GOOD_ROWS).encode(),
    "bad_dates": ("date,a,b\n" + GOOD_ROWS.replace("2020-01-01 05:00:00", "yesterday noon")).encode(),
    "text_cell": ("date,a,b\n" + GOOD_ROWS.replace(",7.5,", ",seven,")).encode(),
    "nan_cell": ("date,a,b\n" + GOOD_ROWS.replace(",7.5,", ",,")).encode(),
    "inf_cell": ("date,a,b\n" + GOOD_ROWS.replace(",7.5,", ",inf,")).encode(),
    "dash_cell": ("date,a,b\n" + GOOD_ROWS.replace(",7.5,", ",-,")).encode(),  # zero in accounting exports: refused
    "duplicate": ("date,a,b\n" + GOOD_ROWS.replace("2020-01-01 05:00:00", "2020-01-01 04:00:00")).encode(),
    "unsorted": ("date,a,b\n" + GOOD_ROWS.replace("2020-01-01 05:00:00", "2020-01-01 03:30:00")).encode(),
    "irregular": ("date,a,b\n" + GOOD_ROWS.replace("2020-01-01 05:00:00", "2020-01-01 05:30:00")).encode(),
    "too_few_rows": ("date,a,b\n" + GOOD_ROWS).encode(),
}

# (case, extra CLI arguments, expected message fragment)
CASES = [
    ("empty", [], "is empty"),
    ("header_only", [], "no data rows"),
    ("binary", [], "not UTF-8 text"),
    ("pipes", [], "not to be comma-separated"),
    ("no_date", [], "no date column 'date'"),
    ("bad_dates", [], "date that cannot be read"),
    ("text_cell", [], "non-numeric value 'seven'"),
    ("nan_cell", [], "--fill"),
    ("inf_cell", [], "column 'a' has an infinite value at line 9; fix the cell, or leave it empty and fill it (CLI: --fill"),
    ("dash_cell", [], "non-numeric value '-' at line 9; fix the cell, or, for a missing value, leave it empty (or write "
                      "NA or NaN) and fill it (CLI: --fill ffill|interpolate"),
    ("duplicate", [], "repeats the date"),
    ("unsorted", [], "not in increasing order"),
    ("irregular", [], "irregular time steps"),
    ("too_few_rows", ["--split", "0.6/0.2/0.2"], "too short for one window"),
]


def run_cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli.cli, list(args), env=env, prog_name="stanhop")


def assert_one_line_usage_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case, extra, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_csv_through_train(tmp_path: Path, case, extra, fragment):
    path = tmp_path / f"{case}.csv"
    path.write_bytes(FILES[case])
    out = tmp_path / "run"
    result = run_cli("train", "--config", SMOKE, "--data", str(path), "--out", str(out), *extra)
    assert_one_line_usage_error(result, fragment)
    assert path.read_bytes() == FILES[case]  # the user's file is untouched


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty; see configs/ for examples"),
    ("# all of it commented out\n", "is empty; see configs/ for examples"),
    ("model: 5\n", "config section 'model' must hold its keys, one 'key: value' per indented line, got 5"),
    ("- data\n- model\n", "config must be a YAML mapping with sections data, model, train, memory"),
    ("model:\n  d_model: [1, 2\n", "is not valid YAML: expected ',' or ']', but got '<stream end>' (line 3, column 1)"),
])
def test_a_bad_config_file_is_a_one_line_error(tmp_path: Path, text, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert_one_line_usage_error(run_cli("train", "--config", str(path), "--out", str(tmp_path / "run")), fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("old, new, fragment", [
    # a key written twice: PyYAML's loader keeps the last without a word
    ("  d_model: 16\n", "  d_model: 16\n  d_model: 32\n", "key 'd_model' is written twice, on lines 15 and 16"),
    ("  tune_epochs: 3\n", "  tune_epochs: 3\ntrain:\n  max_epochs: 1\n", "key 'train' is written twice, on lines 25 and 52"),
    ("columns: null", "columns: 5", "data.columns must name channels: a list such as [OT, HUFL], or OT,HUFL"),
    ("columns: null", "columns: {OT: 1}", "data.columns must name channels"),  # not taken as its keys
    # memory settings are checked with no plugin too: else saved, and refused only by a later `stanhop tune`
    ("\n  size: 64", "\n  size: -5", "memory.size must be a positive whole number, got -5"),
    ("tune_epochs: 3", "tune_epochs: -1", "memory.tune_epochs must be a positive whole number, got -1"),
    ("csv: null", "csv: 5", "memory.csv must be the path of a CSV file, got 5"),
    ("lr: 0.001", "lr: .inf", "train.lr must be a positive number, got inf"),  # else 'loss became nan' in training
    ("grad_clip: 5.0", "grad_clip: .inf", "train.grad_clip must be a number ≥ 0 (0 or null: no clipping), got inf"),
])
def test_a_bad_setting_in_a_config_file_is_refused_before_training(tmp_path: Path, old, new, fragment):
    """configs/smoke.yaml with one setting made bad (a code without the check trains a tiny model)."""
    path = tmp_path / "config.yaml"
    text = Path(SMOKE).read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = run_cli("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_usage_error(result, f"config file {path}")
    assert fragment in result.output
    assert not (tmp_path / "run").exists()


def laughs(levels: int) -> str:
    """YAML's "billion laughs": a list of 9 items, and each further level 9 aliases of the one before."""
    items = ["&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                                               for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("columns, fragment", [
    (laughs(6), "its anchors and aliases (&name, *name) make the value at line 5 more than 100,000 values long; write "
                "the values out"),  # 9**6 names: refused as read, before anything walks them
    (laughs(4), "data.columns must name channels: a list such as [OT, HUFL], or OT,HUFL (null: every numeric column; "
                "quote a name that reads as a number: '2019'), got [['lol', 'lol', "),  # 9**4: quoted abridged
    ("&a [*a]", "the value at line 5 holds itself (an alias *name inside its own &name); write the values out"),
    ("[" * 3000 + "]" * 3000, "its values are nested too deeply"),  # (was an internal RecursionError)
    ("1" * 5000, "a value cannot be read (exceeds the limit (4300 digits) for integer string conversion); write it "
                 "with fewer digits"),  # (was an internal ValueError)
], ids=["laughs", "abridged", "itself", "deep", "digits"])
def test_a_config_that_expands_without_bound_is_refused_in_one_short_line(tmp_path: Path, columns, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(Path(SMOKE).read_text().replace("columns: null", f"columns: {columns}"))
    result = run_cli("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_usage_error(result, f"error: config file {path}: {fragment}")
    assert len(result.output) < 600, len(result.output)
    assert not (tmp_path / "run").exists()
    given = run_cli("train", "--config", SMOKE, "--set", f"data.columns={columns}", "--out", str(tmp_path / "run"))
    assert_one_line_usage_error(given, "data.columns")  # (--set's value is parsed as YAML too)
    assert len(given.output) < 600, len(given.output)


@pytest.mark.parametrize("sets, fragment", [
    (["data.columns=5"], "data.columns must name channels"),  # not an internal TypeError
    (["data.columns={a: 1}"], "data.columns must name channels"),  # not taken as its keys
    (["train.lr=.inf"], "train.lr must be a positive number, got inf"),
    (["train.seed=1", "train.seed=2"], "--set train.seed is given twice (train.seed=1 and train.seed=2); give it once"),
])
def test_a_bad_set_is_refused_before_training(tmp_path: Path, sets, fragment):
    args = [arg for item in sets for arg in ("--set", item)]
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, *args, "--out", str(tmp_path / "run")), fragment)
    assert not (tmp_path / "run").exists()


def test_a_config_file_not_in_utf8_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# réglage\n".encode("latin-1") + Path(SMOKE).read_bytes())
    result = run_cli("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_usage_error(result, f"config file {path} is not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8")
    assert not (tmp_path / "run").exists()


def test_a_config_files_columns_text_is_split_on_commas_as_sets_is(tmp_path: Path):
    from stanhop.config import Config, apply_overrides, load_config, parse_yaml

    path = tmp_path / "columns.yaml"
    path.write_text(Path(SMOKE).read_text().replace("columns: null", "columns: OT, HUFL"))
    assert load_config(path).data.columns == ["OT", "HUFL"]  # not one column named 'OT, HUFL'
    assert apply_overrides(Config(), "data.columns=OT, HUFL").data.columns == ["OT", "HUFL"]
    assert apply_overrides(Config(), "data.columns=OT").data.columns == ["OT"]
    # a merge key's fields may be written again: that is YAML's way to change one of them
    assert parse_yaml("a: &x {k: 1, j: 2}\nb:\n  <<: *x\n  k: 3\n") == {"a": {"k": 1, "j": 2}, "b": {"k": 3, "j": 2}}


def test_a_missing_csv_named_by_a_config_file_is_told_as_the_configs(tmp_path: Path, monkeypatch):
    """A relative data.name is taken from the current folder, not the config file's: the error says so."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "rel.yaml").write_text(Path(SMOKE).read_text().replace("name: ETTh1", "name: data/small.csv"))
    monkeypatch.chdir(tmp_path)
    result = run_cli("train", "--config", "cfg/rel.yaml", "--out", "run")
    assert_one_line_usage_error(result, f"file data/small.csv not found (data.name in config file cfg/rel.yaml, relative "
                                        f"to the current folder {Path.cwd()}, not to the config file's); correct it "
                                        f"there, or give another with --set data.name=FILE")
    assert not (tmp_path / "run").exists()


def test_a_file_over_the_size_cap_is_rejected_before_reading(tmp_path: Path):
    path = tmp_path / "huge.csv"
    path.write_bytes(b"date,a\n" + b"2020-01-01 00:00:00,1\n" * 2000)
    result = run_cli("data", "describe", str(path), env={"STANHOP_MAX_CSV_BYTES": "1000"})
    assert_one_line_usage_error(result, "over the")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--data", "NoSuchSet"], "unknown data set 'NoSuchSet'"),
        (["train", "--data", "missing.csv"], "not found"),
        (["train", "--set", "model.separation=hopfieldmax"], "unknown separation 'hopfieldmax'"),
        (["train", "--set", "model.out_len=-1"], "model.out_len must be a positive whole number"),
        (["train", "--set", "model.d_model=30", "--set", "model.n_heads=4"], "divisible"),
        (["train", "--set", "model.nope=1"], "unknown config key"),
        (["train", "--set", "model.dmodel=8"], "--set: unknown config key 'model.dmodel'; did you mean model.d_model?"),
        (["train", "--set", "model.n_series=3"], "the number of series is the data's, set from its channels"),
        (["train", "--set", "train.limit_train_batches=0.001"], "train.limit_train_batches 0.001 of the 16 training "
                                                                "batches is less than one; give at least 0.0625"),
        (["train", "--set", "train.precision=16-mixed", "--accelerator", "cpu"], "16-mixed needs a CUDA GPU"),
        (["train", "--split", "7/7"], "three positive numbers"),
        (["train", "--micro-batch-size", "0"], "train.micro_batch_size must be a positive whole number or null"),
        (["train", "--config", "no-such.yaml"], "not found"),
        (["train", "--set", "train.precision=8"], "train.precision must be one of 32, bf16-mixed, 16-mixed, 64"),
        (["train", "--seed", "-1"], "train.seed must be a whole number from 0 to 2³² − 1"),
        (["train", "--set", "train.grad_clip=-1"], "train.grad_clip must be a number ≥ 0"),  # not gradient ascent
        (["train", "--set", "train.patience=-2"], "train.patience must be a whole number of epochs, 0 or more"),
        (["train", "--set", "train.limit_train_batches=0"], "train.limit_train_batches must be a fraction in (0, 1]"),
        (["train", "--set", "train.limit_train_batches=2.5"], "or a whole number of batches"),
        (["train", "--set", "train.lr_halving_epochs=5"], "train.lr_halving_epochs must be a list of epochs"),
        (["train", "--set", "train.lr_halving_epochs=[-1]"], "train.lr_halving_epochs must be a list of epochs"),
        (["train", "--set", f"train.lr_halving_epochs=[{'1, ' * 500}x]"], "its item 501 of 501 is 'x'"),  # not abridged away
        (["train", "--set", "train.deterministic=maybe"], "train.deterministic must be true or false"),
        (["train", "--set", "train.accelerator=tpu"], "train.accelerator must be one of auto, cpu, gpu"),
        (["train", "--set", "train.strategy=fsdp"], "train.strategy must be one of auto, ddp"),
        (["train", "--set", "data.name=5"], "data.name must be text"),
        (["train", "--memory-size", "8"], "add --memory plug or --memory tune"),  # not silently a run without one
        (["train", "--memory-strategy", "all"], "add --memory plug or --memory tune"),
        (["train", "--set", "memory.size=8"], "--set memory.size sets a memory plugin that this run has none of"),
        (["train", "--set", "model.d_model=[1,2"], "--set model.d_model: '[1,2' is not a value (expected ',' or ']'"),
        (["train", "--set", "model.dropout=abc"], "model.dropout must be in [0, 1), got 'abc'"),
    ],
)
def test_bad_options(args, fragment):
    if "--config" not in args:
        args = [*args[:1], "--config", SMOKE, *args[1:]]
    result = run_cli(*args)
    assert_one_line_usage_error(result, fragment)


@pytest.mark.parametrize("extra, named", [(["--separation", "softmax1"], "--separation"),
                                          (["--force", "--set", "model.d_model=4"], "--set, --force")])
def test_options_a_resumed_run_cannot_take_are_refused_not_ignored(tmp_path: Path, extra, named):
    run = tmp_path / "run"
    result = run_cli("train", "--resume", str(run), "--max-epochs", "4", *extra)
    assert_one_line_usage_error(result, f"so {named} cannot apply")
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one(tmp_path: Path):
    out = tmp_path / "run"
    result = run_cli("train", "--config", SMOKE, "--accelerator", "gpu", "--out", str(out))
    assert_one_line_usage_error(result, "no GPU")
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("args, fragment", [
    (["train", "--separation", "hopfieldmax"], "invalid value for '--separation': 'hopfieldmax' is not one of"),
    (["forecast", "run", "--horizon", "0"], "invalid value for '--horizon': 0 is not in the range x>=1 "
                                             "(see 'stanhop forecast --help')"),
    (["forecast"], "missing argument 'RUN' (see 'stanhop forecast --help')"),
    (["train", "--out"], "option '--out' requires an argument (see 'stanhop train --help')"),
    (["trian"], "no such command 'trian'. Did you mean 'train'? (see 'stanhop --help')"),
    (["data", "describ"], "(see 'stanhop data --help')"),
    (["--bogus"], "no such option '--bogus' (see 'stanhop --help')"),
])
def test_a_mistyped_command_line_is_one_line_too(args, fragment):
    """click's usage errors (unknown command or option, a bad value, a missing argument) in
    stanhop's one-line form, not a usage block and a capitalised Error:."""
    assert_one_line_usage_error(run_cli(*args), fragment)


def test_in_len_not_a_multiple_of_seg_len_is_padded_not_refused(tmp_path: Path):
    result = run_cli("train", "--config", SMOKE, "--in-len", "22", "--set", "train.max_epochs=1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("key, option", [("model.separation", "--separations"), ("model.gate", "--gated"),
                                         ("train.seed", "--seeds")])
def test_compare_refuses_to_set_what_it_sets_for_each_run(tmp_path: Path, key, option):
    result = run_cli("compare", "--config", SMOKE, "--out", str(tmp_path / "study"), "--set", f"{key}=1")
    assert_one_line_usage_error(result, f"choose it with {option}")  # not silently overridden by every run
    assert not (tmp_path / "study").exists()


def test_compare_refuses_an_option_given_again_by_set(tmp_path: Path):
    """As train refuses it: else --set would win without a word."""
    result = run_cli("compare", "--config", SMOKE, "--separations", "softmax", "--seeds", "1", "--max-epochs", "1",
                     "--set", "train.max_epochs=2", "--set", "train.limit_train_batches=1", "--out", str(tmp_path / "study"))
    assert_one_line_usage_error(result, "train.max_epochs is given twice, by its own option (1) and by --set "
                                        "train.max_epochs=2; give it once")
    assert not (tmp_path / "study").exists()


def test_evaluate_refuses_a_range_without_quantize(tmp_path: Path):
    result = run_cli("evaluate", str(tmp_path), "--range", "percentile:99.9")  # not silently unquantized figures
    assert_one_line_usage_error(result, "add --quantize w8a8")


def test_a_bad_input_creates_no_run_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is runs/<data>-<separation>-<time> here
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--data", "missing.csv"), "not found")
    assert not (tmp_path / "runs").exists()


def test_run_directories_are_replaced_only_with_force_and_only_once_the_input_is_good(tmp_path: Path):
    from stanhop.runs import prepare_run_dir

    run = prepare_run_dir(tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"the previous run's weights")
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(run)), "pass --force to replace it")
    # --force with data that cannot be read: refused before the previous run is touched
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(run), "--force", "--data", "missing.csv"),
                                "not found")
    assert (run / "model.safetensors").read_bytes() == b"the previous run's weights"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"jpeg")
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(other), "--force"),
                                "not a stanhop run directory")
    assert (other / "cat.jpg").read_bytes() == b"jpeg"


def test_force_replaces_only_a_runs_own_files_never_the_users_a_link_or_the_current_folder(tmp_path, monkeypatch):
    from stanhop.runs import prepare_run_dir

    run = prepare_run_dir(tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"the previous run's weights")
    (run / "logs").mkdir()
    (run / "next24h.csv").write_text("the user's forecast")
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(run), "--force"),
                                "holds files a run does not write (next24h.csv); --force replaces only the run's own files")
    assert (run / "next24h.csv").read_text() == "the user's forecast"
    (run / "next24h.csv").unlink()

    link = tmp_path / "link"
    link.symlink_to(run)
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(link), "--force"), "is a link to")
    monkeypatch.chdir(run / "logs")
    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", "..", "--force"),
                                "the current folder lies inside ..")
    assert (run / "model.safetensors").read_bytes() == b"the previous run's weights"

    assert_one_line_usage_error(run_cli("train", "--config", SMOKE, "--out", str(tmp_path / ("a" * 300))),
                                "cannot be a run's folder (File name too long)")
    monkeypatch.chdir(run)  # the run replaced from inside its own folder: its files go, the folder stays
    prepare_run_dir(".", force=True)
    assert sorted(p.name for p in run.iterdir()) == ["stanhop.json"]


def test_an_output_place_that_cannot_be_written_is_a_usage_error(tmp_path: Path, run_dir, etth1_path):
    """Each command that writes, pointed through a file (as through a read-only disk or a folder
    without permission): one line naming the option, before any training or forecasting."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    commands = [
        (["train", "--config", SMOKE, "--out", str(blocker / "run")], "--out"),
        (["forecast", str(run_dir), "--input", str(etth1_path), "--output", str(blocker / "f.csv")], "--output"),
        (["plot", str(run_dir), "--output", str(blocker / "f.png")], "--output"),
        (["compare", "--config", SMOKE, "--seeds", "1", "--out", str(blocker / "study")], "--out"),
    ]
    for args, option in commands:
        result = run_cli(*args)
        assert_one_line_usage_error(result, f"cannot write in {blocker}")
        assert f"({blocker} is a file, not a folder)" in result.output  # not the system's "File exists"
        assert result.output.rstrip().endswith(f"choose another {option}")
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("args, key", [
    (["--separation", "softmax", "--set", "model.separation=sparsemax"], "model.separation"),
    (["--memory", "plug", "--memory-size", "4", "--set", "memory.size=16"], "memory.size"),
])
def test_a_setting_given_by_its_option_and_by_set_is_refused(tmp_path: Path, args, key):
    """--set would win without a word over the option the user also gave."""
    result = run_cli("train", "--config", SMOKE, *args, "--out", str(tmp_path / "run"))
    assert_one_line_usage_error(result, f"{key} is given twice, by its own option")
    assert not (tmp_path / "run").exists()
    from stanhop.config import Config, apply_overrides
    from stanhop.errors import UserError

    assert apply_overrides(Config(), "model.d_model=8").model.d_model == 8  # one override as a string
    assert apply_overrides(Config(), "data.columns=OT, HUFL").data.columns == ["OT", "HUFL"]  # as --columns OT,HUFL
    with pytest.raises(UserError, match="overrides must be a list of 'section.key=value' strings, got NoneType"):
        apply_overrides(Config(), None)


def test_counts_take_their_noun_in_the_singular_for_one():
    from stanhop.errors import counted

    assert [counted(n, "window") for n in (0, 1, 2)] == ["0 windows", "1 window", "2 windows"]
