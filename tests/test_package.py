"""The package's shape: no import cycles, every public name resolves, renamed modules keep their old
paths as deprecated aliases."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cmasktrack"


def _modules():
    """{dotted module name: (file, is_package)} of every module of the package."""
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def _imports(name, path, is_pkg, mods):
    """The package modules ``name`` imports at run time (lazy imports inside functions count;
    ``if TYPE_CHECKING:`` blocks and a module's own parent packages do not)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in mods and t != name and not name.startswith(t + ".")}
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, f, p, mods) for m, (f, p) in mods.items()}
    # depth-first search for a back edge; report the cycle it closes
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert "cmasktrack.video_result" in graph and "cmasktrack.visualize" in graph["cmasktrack.video_result"]


def test_public_names_resolve():
    import importlib

    import cmasktrack

    for name in cmasktrack.__all__:
        assert getattr(cmasktrack, name) is not None, name
    # the common tasks from one import line
    from cmasktrack import CMaskTrack, VISDataset, evaluate_vis, load_results, render_video, track_dataset  # noqa: F401

    for package in ("cmasktrack.data", "cmasktrack.evaluation", "cmasktrack.train", "cmasktrack.data.synthetic"):
        module = importlib.import_module(package)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, (package, missing)


# (old module, new module, names the old one must still provide)
ALIASES = [
    ("cmasktrack.checkpoint", "cmasktrack.weights",
     ["CheckpointError", "convert_official_state_dict", "infer_config", "load_official_state_dict",
      "official_to_cmasktrack_key"]),
    ("cmasktrack.config", "cmasktrack.model_config", ["CMaskTrackConfig", "ovis_config", "read_json", "CONFIG_NAME"]),
    ("cmasktrack.results", "cmasktrack.video_result",
     ["FrameResult", "Track", "VideoResult", "encode_mask", "decode_rle", "majority_label", "mean_score"]),
    ("cmasktrack.inference", "cmasktrack.tracking.dataset", ["track_dataset"]),
    ("cmasktrack.train.init", "cmasktrack.train.initialisation",
     ["InitReport", "initialise_model", "detect_checkpoint_kind", "torchvision_to_cmasktrack_key",
      "normalise_frozen_batchnorm"]),
]


@pytest.mark.parametrize("old, new, names", ALIASES, ids=[a[0] for a in ALIASES])
def test_renamed_modules_keep_their_old_path_with_a_deprecation_warning(old, new, names):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.deprecated_call(match=new.split(".")[-1]):
        alias = importlib.import_module(old)
    target = importlib.import_module(new)
    for name in names:
        assert getattr(alias, name) is getattr(target, name), name
    from cmasktrack.weights import WEIGHTS_NAME

    assert old != "cmasktrack.config" or alias.WEIGHTS_NAME == WEIGHTS_NAME == "model.safetensors"


def test_moved_functions_keep_their_old_path_with_a_deprecation_warning():
    import sys

    import cmasktrack.postprocess
    import cmasktrack.resize
    import cmasktrack.transforms as transforms

    for name, module in [("paste_masks", cmasktrack.postprocess), ("mask_paste_boxes", cmasktrack.postprocess),
                         ("paste_mask", cmasktrack.postprocess), ("resize_prob_map", cmasktrack.resize)]:
        with pytest.deprecated_call(match=name):
            assert getattr(transforms, name) is getattr(module, name)
    sys.modules.pop("cmasktrack.train.cli", None)
    with pytest.deprecated_call(match="cmasktrack.cli"):
        from cmasktrack.train.cli import main  # noqa: F401


def _readme_layout():
    """The paths (relative to cmasktrack/) that README's Layout section lists."""
    text = (PACKAGE.parent / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    listed, dirs, aliases = set(), [], False
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        token = line.split()[0]
        if depth == 0:
            dirs, aliases = [token], False
            continue
        if line.strip().startswith("deprecated aliases"):
            aliases = True
            continue
        if not token.endswith((".py", "/")):
            continue  # a description continued on the next line
        if aliases:  # paths relative to the package
            listed.add(token)
            continue
        dirs = dirs[:depth] + [token]
        if dirs[0] == "cmasktrack/":
            listed.add("".join(dirs[1:]))
    return listed


def test_readme_layout_matches_the_tree():
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    actual |= {str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    listed = {p for p in _readme_layout() if p.endswith(".py") and not p.endswith("__init__.py")
              or (PACKAGE / p / "__init__.py").is_file()}
    assert sorted(listed - actual) == [] and sorted(actual - listed) == []


def test_readme_promises_slow_tests_only_if_there_are_some():
    readme = (PACKAGE.parent / "README.md").read_text()
    decorator = re.compile(r"^\s*@pytest\.mark\.slow\b|pytestmark\s*=.*\bslow\b", re.M)
    marked = any(decorator.search(p.read_text()) for p in (PACKAGE.parent / "tests").glob("test_*.py"))
    assert marked or "pytest -m slow" not in readme  # `pytest -m slow` with none selected exits with code 5
