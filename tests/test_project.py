"""The package itself: environments in step, notebooks clean and parameterised, the runner's CLI."""
import ast
import json
import re
import tomllib

import pytest
import yaml

from lib.common import config
from lib.pipeline import run

ROOT = config.ROOT


def _names(requirements):
    return {re.split(r"[<>=!~\[ ]", r.strip())[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_and_pyproject_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _names(pip) == wanted
    # ... and with the same version constraints.
    assert sorted(pip) == sorted(project["dependencies"] + project["optional-dependencies"]["dev"])


def test_torch_is_pinned_and_installed_first():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("pip install --quiet torch==2.13.0") < makefile.index('pip install --quiet -e ".[dev]"')
    assert "torch==2.13.0" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_five_stage_notebooks_exist_in_order():
    assert [p.name for p in NOTEBOOKS] == [s.notebook for s in run.STAGES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    # The project's kernel (make setup installs it into .venv), so `make lab` opens each with it selected.
    assert nb["metadata"]["kernelspec"]["name"] == "toolsft-repro" and nb["metadata"]["language_info"]["name"]
    for cell in nb["cells"]:
        assert not cell.get("outputs") and not cell.get("execution_count"), f"{path.name} has outputs"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name} needs one cell tagged 'parameters'"
    tree = ast.parse("".join(params[0]["source"]))
    assigned = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds assignments only"
        assigned[node.targets[0].id] = ast.literal_eval(node.value)   # plain literals only
    assert assigned == {"profile": "smoke", "overrides": {}}
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    assert node.end_lineno - node.lineno < 6, f"{path.name}: logic belongs in lib/"


def test_runner_rejects_unknown_stages_and_bad_settings(capsys):
    with pytest.raises(SystemExit, match="unknown stage '07'"):
        run.select(only="07")
    assert [s.number for s in run.select(start="03")] == ["03", "04", "05"]
    assert run.main(["--set", "trian.x=1"]) == 1
    assert "unknown key 'trian'" in capsys.readouterr().err
    # --set is read by config.parse_overrides, in lib.pipeline.run as in lib.train.train and bench/recipes.py.
    from lib.train import train
    for main in (run.main, train.main):
        with pytest.raises(SystemExit):
            main(["--set", "train.max_steps"])
        assert "--set takes KEY=VALUE (e.g. train.max_steps=5), got 'train.max_steps'" in capsys.readouterr().err


def test_a_bad_value_fails_in_a_second_and_touches_no_finished_work(tmp_path, capsys):
    """The issue's sequences: an invalid inference or training setting once moved finished
    trajectories aside or deleted every checkpoint before failing. Now the profile is checked on
    load, before any stage or folder is touched."""
    import time
    out = tmp_path / "out"
    finished = {out / "trajectories" / "G1_instruction.jsonl": '{"query_id": 1}\n',
                out / "trajectories" / "RUN_KEY.json": "{}",
                out / "checkpoints" / "checkpoint-40" / "trainer_state.json": "{}",
                out / "checkpoints" / "checkpoint-60" / "trainer_state.json": "{}",
                out / "train_log.jsonl": '{"step": 60}\n'}
    for path, text in finished.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for bad, says in [(["--only", "03", "--force", "--set", "inference.method=foo"], "'inference.method' must be one of"),
                      (["--only", "02", "--force", "--set", "train.learning_rate=abc"], "'train.learning_rate' must be float"),
                      (["--set", "judge.kind=bar"], "'judge.kind' must be one of")]:
        t0 = time.time()
        assert run.main(["--set", f"output_dir={out}", *bad]) == 1
        assert says in capsys.readouterr().err and time.time() - t0 < 10
    assert {p: p.read_text() for p in finished} == finished
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "train_log.jsonl", "trajectories"]


def test_a_second_runner_on_the_same_profile_stops_before_any_stage(tmp_path, capsys):
    from lib.common import resume
    out = tmp_path / "out"
    with resume.exclusive(out / "stages", "lib.pipeline.run --profile smoke"):
        assert run.main(["--set", f"output_dir={out}", "--skip-check"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'stages'} is being written by another run (pid " in err and "lib.pipeline.run --profile smoke" in err
    assert not (out / "notebooks").exists()


def test_up_to_date_check_follows_mtimes(tmp_path, monkeypatch):
    import os
    import shutil
    profile = tmp_path / "profile.yaml"
    shutil.copy(config.CONFIG_DIR / "smoke.yaml", profile)
    cfg = config.load(str(profile), {"output_dir": str(tmp_path / "out")})
    stage = run.STAGES[0]
    assert not run.is_up_to_date(cfg, stage, [])
    (tmp_path / "out" / "sft").mkdir(parents=True)
    (tmp_path / "out" / "sft" / "data.arrow").write_text("x")
    (tmp_path / "out" / "data_stats.json").write_text("{}")
    newest_input = max(p.stat().st_mtime for p in [profile, *run.LIB_DIR.rglob("*.py"), *run.LIB_DIR.rglob("*.txt"),
                                                    run.NOTEBOOK_DIR / stage.notebook])
    for output in (tmp_path / "out" / "sft" / "data.arrow", tmp_path / "out" / "data_stats.json"):
        os.utime(output, (newest_input + 5, newest_input + 5))
    assert not run.is_up_to_date(cfg, stage, [])        # outputs, but the notebook never finished
    run.mark_done(cfg, stage)
    assert run.is_up_to_date(cfg, stage, [])
    # Another --set value is no file, yet it is another run: not up to date.
    other = config.load(str(profile), {"output_dir": str(tmp_path / "out"), "data.histogram_bins": 7})
    assert not run.is_up_to_date(other, stage, [])
    # A judge setting is not read by stage 01 (it stays done), but it is by stages 04 and 05.
    judged = config.load(str(profile), {"output_dir": str(tmp_path / "out"), "judge.evaluate_times": 5})
    assert run.is_up_to_date(judged, stage, [])
    for later in run.STAGES[3:]:
        assert run.settings_digest(judged, later) != run.settings_digest(cfg, later)
    assert run.settings_digest(judged, run.STAGES[2]) == run.settings_digest(cfg, run.STAGES[2])
    # A module edited in a package (lib/<package>/<module>.py), or a prompt file deeper down, counts.
    for edited in ("data/data.py", "toolbench/tooleval_prompts/template.txt"):
        lib = tmp_path / f"lib-{edited.count('/')}"
        (lib / edited).parent.mkdir(parents=True)
        (lib / edited).write_text("x")
        os.utime(lib / edited, (newest_input + 10, newest_input + 10))
        monkeypatch.setattr(run, "LIB_DIR", lib)
        assert not run.is_up_to_date(cfg, stage, []), edited
    monkeypatch.undo()
    assert run.is_up_to_date(cfg, stage, [])
    os.utime(profile, (newest_input + 10, newest_input + 10))
    assert not run.is_up_to_date(cfg, stage, [])


def _notebook(path, *cells):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'\noverrides = {}", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))


def test_a_stage_that_fails_after_writing_outputs_is_not_done(tmp_path, monkeypatch, capsys):
    """The training notebook once wrote model/ and train_summary.json, then failed in a later cell,
    and the next run skipped it as up to date. Only a notebook that ran to its end counts."""
    import io
    out = tmp_path / "out"
    writes = f"import pathlib; pathlib.Path({str(out / 'result.txt')!r}).write_text('x'); print('progress line 1')"
    monkeypatch.setattr(run, "NOTEBOOK_DIR", tmp_path)
    monkeypatch.setattr(run, "STAGES", (run.Stage("01", "01_fails.ipynb", ("result.txt",)),))
    _notebook(tmp_path / "01_fails.ipynb", writes, "raise RuntimeError('a later cell fails')")
    overrides = {"output_dir": str(out)}
    stream = io.StringIO()
    with pytest.raises(run.StageFailed, match="a later cell fails"):
        run.run("smoke", overrides, stdout=stream)
    assert (out / "result.txt").exists() and "progress line 1" in stream.getvalue()
    cfg = config.load("smoke", overrides)
    assert not run.is_up_to_date(cfg, run.STAGES[0], [])
    # Fixed, it runs again (not skipped) and is then done.
    _notebook(tmp_path / "01_fails.ipynb", writes)
    assert len(run.run("smoke", overrides)) == 1
    assert run.is_up_to_date(cfg, run.STAGES[0], [])


def test_the_runner_checks_inputs_first_and_stops_on_a_missing_one(monkeypatch, capsys, tmp_path):
    def never(*args, **kwargs):
        raise AssertionError("a stage ran although an input is missing")
    monkeypatch.setattr(run, "run", never)
    missing = str(tmp_path / "nowhere.json")
    assert run.main(["--profile", "paper", "--set", f"data.train_path={missing}"]) == 1
    out, err = capsys.readouterr()
    assert "pre-flight check, profile 'paper'" in out and "set data.train_path" in out
    assert "--skip-check" in err
    assert run.main(["--check"]) == 0                       # smoke: everything is there or generated
    assert "0 missing" in capsys.readouterr().out


PACKAGES = ("common", "toolbench", "models", "checks", "data", "train", "infer", "judge", "report", "pipeline")


def _module_map() -> list[tuple[str, str, str]]:
    """docs/modules.md's "Where things are" rows: (package/module, what it holds, notebook column)."""
    table = (ROOT / "docs" / "modules.md").read_text()
    return re.findall(r"^\| `([a-z_]+/[a-z_]+)` \| (.*) \| ([^|]*) \|$", table, flags=re.M)


def _lib_imports(tree) -> list[tuple[ast.ImportFrom, set[str]]]:
    """Each `from lib.<package> import a, b` / `from lib.<package>.<module> import x` as the
    package/module names it reaches."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib"):
            parts = node.module.split(".")
            assert len(parts) > 1, f"line {node.lineno}: 'from lib import' names no package"
            names = {f"{parts[1]}/{a.name}" for a in node.names} if len(parts) == 2 else {f"{parts[1]}/{parts[2]}"}
            found.append((node, names))
    return found


def test_every_module_is_on_the_module_map_below_what_it_imports():
    """docs/modules.md lists each lib module once, by package in the order imports flow:
    a module imports only packages above its own, or modules above it in its own package (top-level,
    where they must be), so nothing in an earlier stage imports a later one, and there are no circles."""
    order = [name for name, _, _ in _module_map()]
    modules = {f"{p.parent.name}/{p.stem}": p for p in (ROOT / "lib").glob("*/*.py") if p.stem != "__init__"}
    assert sorted(order) == sorted(modules)
    assert sorted({m.split("/")[0] for m in order}, key=PACKAGES.index) == list(PACKAGES)
    assert [m.split("/")[0] for m in order] == sorted((m.split("/")[0] for m in order), key=PACKAGES.index)
    assert sorted(p.name for p in (ROOT / "lib").glob("*.py")) == ["__init__.py"]
    for position, name in enumerate(order):
        package = name.split("/")[0]
        tree = ast.parse(modules[name].read_text())
        for node, reached in _lib_imports(tree):
            assert node in tree.body, f"lib/{name}.py imports lib modules inside a function (line {node.lineno})"
            for target in reached:
                other = target.split("/")[0]
                assert PACKAGES.index(other) < PACKAGES.index(package) or target in order[:position], \
                    f"lib/{name}.py imports {target}, which is not above it"


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_bench_scripts_import_and_name_only_what_lib_has(path):
    """The bench scripts run where CI does not (a GPU, an hour): a lib refactor must not leave them
    calling a name that moved. Each imports, and each `module.attr` on a lib module exists."""
    import importlib
    tree = ast.parse(path.read_text())
    aliases = {a.asname or a.name: importlib.import_module(f"{node.module}.{a.name}") for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").count(".") == 1
               and node.module.startswith("lib.") for a in node.names}
    missing = [f"line {node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
               and node.value.id in aliases and not hasattr(aliases[node.value.id], node.attr)]
    assert not missing, f"{path.name} uses names lib does not have: {missing}"
    if path.stem != "__init__":
        importlib.import_module(f"bench.{path.stem}")


SECTIONS = ("data", "model", "format_check", "train", "lora", "accelerate", "inference", "bfcl", "judge", "report")
# Not after "lib." or "/": lib.judge.judge and lib/train/train.py name modules, not keys.
DOTTED = re.compile(r"(?<![\w./])(" + "|".join(SECTIONS) + r")\.([a-z_][a-z0-9_]*)\b")


def _known_key(section: str, key: str) -> bool:
    schema = config.SCHEMA[section]
    fields = config._library_fields(schema) if isinstance(schema, str) else schema
    return key in fields


def test_notebooks_name_only_config_keys_that_exist():
    """A dotted key a notebook names (`inference.method` in prose, "judge.kind" in an override, a
    cfg.judge.kind lookup) must be in the profile schema: a renamed key fails here, not in a
    workshop. Names of lib modules' functions (`data.prepare`, `judge.run`) are not keys."""
    import importlib
    unknown = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"])
            found = [(m.group(1), m.group(2)) for m in DOTTED.finditer(text)]
            found += re.findall(r'cfg\["(' + "|".join(SECTIONS) + r')"\]\["([a-z_0-9]+)"\]', text)
            for section, key in found:
                if key == "py":         # a file name, lib/train/train.py
                    continue
                module = [importlib.import_module(f"lib.{p.parent.name}.{p.stem}")
                          for p in (ROOT / "lib").glob(f"*/{section}.py")]
                if not _known_key(section, key) and not any(hasattr(m, key) for m in module):
                    unknown.append(f"{path.name}: {section}.{key}")
    assert not unknown, f"notebooks name config keys that do not exist: {sorted(set(unknown))}"


def test_the_module_map_says_which_notebooks_call_each_module():
    """docs/modules.md's notebook column is the notebooks' own `from lib.<package> import ...` lines (config:
    all, preflight: make check), so the map cannot drift from what a reader steps through."""
    uses: dict[str, set] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for _, reached in _lib_imports(ast.parse("".join(cell["source"]))):
                    for name in reached:
                        uses.setdefault(name, set()).add(path.name[:2])
    for name, _, column in _module_map():
        if name not in ("common/config", "pipeline/preflight"):
            assert column.strip() == (", ".join(sorted(uses.get(name, ()))) or "-"), name


def test_long_functions_say_why_beside_their_def():
    """A function over 60 lines or 6 parameters carries a comment line right above it saying why
    (the issue's rule), in every package of lib/."""
    unexplained = []
    for path in sorted((ROOT / "lib").glob("*/*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                params += [p for p in (a.vararg, a.kwarg) if p]
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if (node.end_lineno - first >= 60 or len(params) > 6) and not lines[first - 2].lstrip().startswith("#"):
                    unexplained.append(f"lib/{path.parent.name}/{path.name}:{node.lineno} {node.name}")
    assert not unexplained, f"long functions without a reason beside them: {unexplained}"
