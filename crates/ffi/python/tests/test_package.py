"""The package under test is the installed one, complete and typed."""

import pathlib

import tether

SOURCE_TREE = pathlib.Path(__file__).resolve().parents[2]  # crates/ffi


def test_the_installed_package_is_tested_not_the_source_tree():
    package = pathlib.Path(tether.__file__).resolve().parent
    assert SOURCE_TREE not in package.parents, f"tether imported from the source tree: {package}"
    assert "site-packages" in package.parts, package


def test_the_package_has_its_library_and_type_marker():
    package = pathlib.Path(tether.__file__).resolve().parent
    libraries = [p.name for p in (package / "tether_ffi").iterdir() if "tether_ffi" in p.name]
    assert any(name.startswith("libtether_ffi") or name.endswith(".dll") for name in libraries), libraries
    # The generated module is annotated; the marker makes type checkers use it.
    assert (package / "py.typed").is_file()


def test_everything_generated_is_exported():
    for name in ["TetherNodeBuilder", "NetworkSnapshot", "TetherError", "start_test_signaling_server"]:
        assert name in tether.__all__, name
        assert hasattr(tether, name), name
