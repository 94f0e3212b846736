"""The stackflask command: validate, deps, routes, list-apis, list-providers,
its ``--help`` and its shell completion."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, script, server_env

from stackflask.cli import main
from stackflask.docstrings import plain_text

API = '''
from typing import Protocol

from stackflask import AdapterSpec, Api, InlineProviderSpec, RemoteProviderSpec, webmethod


def available_providers():
    return [
        InlineProviderSpec(api=Api.notes, provider_type="inline::mem", module="notes_impl_cli",
                           pip_packages=["notes-mem", "shared-lib"]),
        RemoteProviderSpec(api=Api.notes, adapter=AdapterSpec(
            adapter_type="cloud", module="notes_impl_cli", pip_packages=["notes-cloud"])),
    ]


class Notes(Protocol):
    @webmethod(route="/notes", method="GET")
    async def list_notes(self) -> list[str]:
        """List the notes."""
        ...

    @webmethod(route="/notes", method="POST")
    async def add_note(self, text: str) -> None:
        """Add a note."""
        ...
'''

IMPL = '''
class Notes:
    async def list_notes(self):
        return []

    async def add_note(self, text):
        return None


def get_provider_impl(config, deps):
    return Notes()


get_adapter_impl = get_provider_impl
'''


@pytest.fixture
def notes_config(stack_files):
    stack_files.module("notes_api_cli", API)
    stack_files.module("notes_impl_cli", IMPL)
    stack_files.api_spec("notes.yaml", {
        "module": "notes_api_cli", "name": "notes", "protocol": "Notes",
        "pip_packages": ["notes-api", "shared-lib"],
    })
    stack_files.provider_file("inline", "notes", "disk", {
        "module": "notes_impl_cli", "pip_packages": ["notes-disk"]})
    return stack_files.run_config({
        "providers": {"notes": [{"provider_id": "m", "provider_type": "inline::mem"}]},
    })


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_validate_ok(notes_config):
    result = run("validate", "--config", notes_config)
    assert result.exit_code == 0, result.output
    assert "1 API(s), 2 route(s)" in result.stdout


@pytest.mark.parametrize("flag", ["--config", "--yaml-config"])
def test_validate_reports_every_problem(stack_files, flag):
    stack_files.api_spec("a.yaml", {"module": "x", "name": "a"})
    stack_files.api_spec("b.yaml", {"module": "y", "name": "b", "protocl": "P"})
    path = stack_files.run_config({"apis": ["a", "b"]})
    result = run("validate", flag, path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any("a.yaml: protocol: Missing data for required field." in line for line in lines)
    assert any("b.yaml: protocl: Unknown field." in line for line in lines)
    assert all(line.startswith("error: ") for line in lines if line)


def test_validate_no_import_checks_files_only(stack_files):
    stack_files.api_spec("a.yaml", {"module": "not_installed_anywhere", "name": "a", "protocol": "P"})
    stack_files.provider_file("remote", "a", "x", {"adapter": {"adapter_type": "x"}})
    path = stack_files.run_config({"apis": ["a"]})
    result = run("validate", "--no-import", "--config", path)
    assert result.exit_code == 1
    assert "x.yaml: adapter.module: Missing data for required field." in result.stderr
    assert "not_installed_anywhere" not in result.stderr


def test_validate_no_import_ok_without_the_packages(stack_files):
    stack_files.api_spec("a.yaml", {"module": "not_installed_anywhere", "name": "a", "protocol": "P"})
    result = run("validate", "--no-import", "--config", stack_files.run_config({"apis": ["a"]}))
    assert result.exit_code == 0, result.output


def test_validate_broken_run_config(stack_files):
    path = stack_files.run_config("apis: [\n")
    result = run("validate", "--config", path)
    assert result.exit_code == 1
    assert "run.yaml: invalid YAML" in result.stderr


def test_deps_lists_requirements_once(notes_config):
    result = run("deps", "--config", notes_config)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["notes-api", "shared-lib", "notes-mem"]


def test_deps_from_providers_dir_without_imports(stack_files):
    stack_files.api_spec("a.yaml", {"module": "not_installed_anywhere", "name": "a",
                                    "protocol": "P", "pip_packages": ["a-api"]})
    stack_files.provider_file("remote", "a", "far", {"adapter": {
        "adapter_type": "far", "module": "far_mod", "pip_packages": ["a-far"]}})
    path = stack_files.run_config({
        "providers": {"a": [{"provider_id": "f", "provider_type": "remote::far"}]}})
    result = run("deps", "--config", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a-api", "a-far"]


def test_deps_warns_when_a_provider_is_not_known_yet(stack_files):
    stack_files.api_spec("a.yaml", {"module": "not_installed_anywhere", "name": "a",
                                    "protocol": "P", "pip_packages": ["a-api"]})
    path = stack_files.run_config({
        "providers": {"a": [{"provider_id": "f", "provider_type": "inline::later"}]}})
    result = run("deps", "--config", path)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["a-api"]
    assert "providers.a[0]" in result.stderr and "inline::later" in result.stderr


def test_routes(notes_config):
    result = run("routes", "--config", notes_config)
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["METHOD", "PATH", "API", "PROVIDER", "SUMMARY"]
    assert ["GET", "/v1/notes", "notes", "inline::mem", "List", "the", "notes."] in lines
    assert ["POST", "/v1/notes", "notes", "inline::mem", "Add", "a", "note."] in lines
    assert ["GET", "/v1/health", "-", "-", "built-in"] in lines


MARKED_UP_API = '''
from typing import Protocol

from stackflask import webmethod


class Marked(Protocol):
    @webmethod(route="/marked", method="GET")
    async def marked(self) -> str:
        """{summary}

        More about it, ``untouched`` here (only the summary is shown).
        """
        ...
'''

MARKED_UP_IMPL = '''
class Marked:
    async def marked(self):
        return ""


def get_provider_impl(config, deps):
    return Marked()
'''

#: A docstring summary in reST, and the plain text ``stackflask routes`` shows.
SUMMARIES = [
    ("Get the ``locations`` of a place.", "Get the locations of a place."),
    ("Build a :class:`weather.Report` now.", "Build a weather.Report now."),
    ("Call :meth:`~weather.Client.fetch` first.", "Call fetch first."),
    ("Read *every* note, **fast**.", "Read every note, fast."),
    ("See `the guide <https://example.org/guide>`_ and `x`.", "See the guide and x."),
    ("Get a note. :param note_id: which one", "Get a note."),
    ("Get it. :returns: the note", "Get it."),
    (r"Multiply by 2 \* 3, a*b*c stays.", "Multiply by 2 * 3, a*b*c stays."),
    ("Plain text: nothing to change.", "Plain text: nothing to change."),
]


@pytest.mark.parametrize(("summary", "shown"), SUMMARIES)
def test_routes_shows_summaries_as_plain_text(stack_files, summary, shown):
    path = stack_files.serve_api(
        "marked", "Marked", MARKED_UP_API.replace("{summary}", summary.replace("\\", "\\\\")),
        MARKED_UP_IMPL,
    )()
    result = run("routes", "--config", path)
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if "/v1/marked" in line]
    assert row.split(None, 4)[4] == shown
    assert plain_text(summary) == shown


def command_summaries(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command, str]]:
    """``(path, command, first sentence)`` of every command, subcommands included."""
    found = []
    for name, command in group.commands.items():
        text = command.short_help or (command.help or "").split("\n\n")[0]
        sentence = " ".join(text.split())
        found.append((f"{prefix}{name}", command, sentence.split(". ")[0].rstrip(".") + "."))
        if isinstance(command, click.Group):
            found += command_summaries(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize(
    ("path", "sentence"),
    [(path, sentence) for path, _, sentence in command_summaries(main)],
    ids=[path for path, _, _ in command_summaries(main)],
)
def test_help_shows_each_summary_in_full(path, sentence):
    """``stackflask [GROUP] --help`` at 80 columns lists each command with its
    whole first sentence (click would cut it to "serves,...")."""
    *group, name = path.split()
    result = CliRunner().invoke(main, [*group, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.stdout.split("Commands:\n", 1)[1]
    entry = re.search(rf"^  {re.escape(name)}  +(.*(?:\n {{4,}}\S.*)*)", listing, re.M)
    assert entry, listing
    assert " ".join(entry.group(1).split()) == sentence, listing
    assert "..." not in listing


# -- shell completion (click's), as docs/cli.md shows it ---------------------------


def completion_commands() -> dict[str, str]:
    """``{shell: command}`` for each ``_STACKFLASK_COMPLETE=<shell>_source`` line of docs/cli.md."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    found = re.findall(r"(_STACKFLASK_COMPLETE=(\w+)_source stackflask)", text)
    return {shell: command for command, shell in found}


def test_cli_doc_shows_completion_for_bash_zsh_and_fish():
    assert set(completion_commands()) == {"bash", "zsh", "fish"}


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F _stackflask_completion stackflask"),
     ("zsh", "#compdef stackflask"),
     ("fish", "complete --no-files --command stackflask")],
)
def test_completion_script_is_produced(tmp_path, shell, marker):
    command = completion_commands()[shell]
    env = server_env(PATH=f"{Path(script('stackflask')).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["stackflask", "r"], ["routes", "run"]),
        (["stackflask", "list-"], ["list-apis", "list-providers"]),
        (["stackflask", "new", ""], ["api", "provider"]),
        (["stackflask", "run", "--th"], ["--threads"]),
    ],
    ids=["r", "list-", "new", "run-option"],
)
def test_bash_completes_commands_and_options(tmp_path, words, expected):
    """The bash script, sourced into a real bash, completes as a user would see it."""
    env = server_env(PATH=f"{Path(script('stackflask')).parent}{os.pathsep}{os.environ['PATH']}")
    program = (
        f'eval "$({completion_commands()["bash"]})" && '
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}) && COMP_CWORD={len(words) - 1} && "
        '_stackflask_completion stackflask && printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_bash_complete_protocol():
    """click's own protocol, as the script calls it: ``type,value`` lines."""
    env = server_env(COMP_WORDS="stackflask r", COMP_CWORD="1", _STACKFLASK_COMPLETE="bash_complete")
    done = subprocess.run([script("stackflask")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,routes", "plain,run"]


def test_list_apis(notes_config):
    result = run("list-apis", "--config", notes_config)
    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[1].split()
    assert row[:5] == ["notes", "yes", "2", "notes_api_cli", "Notes"]
    assert row[5].endswith("apis.d/notes.yaml")


@pytest.mark.parametrize("args", [(), ("notes",)])
def test_list_providers(notes_config, args):
    result = run("list-providers", "--config", notes_config, *args)
    assert result.exit_code == 0, result.output
    rows = {tuple(line.split()[:3]): line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {("notes", "inline::mem", "yes"), ("notes", "remote::cloud", "no"),
                         ("notes", "inline::disk", "no")}
    assert "notes_api_cli.available_providers()" in rows[("notes", "inline::mem", "yes")]
    assert "providers.d/inline/notes/disk.yaml" in rows[("notes", "inline::disk", "no")]


def test_unknown_api_is_a_usage_error(notes_config):
    result = run("list-providers", "--config", notes_config, "nope")
    assert result.exit_code == 2
    assert "unknown API 'nope' (known: notes)" in result.stderr


def test_unknown_option_is_a_usage_error():
    assert run("validate", "--nope").exit_code == 2


def test_deps_install_runs_pip_on_the_requirements(stack_files, tmp_path):
    """``deps --install`` installs every requirement with this interpreter's pip
    (into a --target folder here, so the test environment stays as it was)."""
    import os
    import subprocess
    import sys
    import zipfile

    wheel = tmp_path / "tiny_dep_cli-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_dep_cli/__init__.py", "VALUE = 42\n")
        info = "tiny_dep_cli-0.1.dist-info"
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tiny-dep-cli\nVersion: 0.1\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    stack_files.api_spec("a.yaml", {"module": "not_installed_anywhere", "name": "a",
                                    "protocol": "P", "pip_packages": [str(wheel)]})
    path = stack_files.run_config({"apis": ["a"]})
    target = tmp_path / "target"
    env = {**os.environ, "PIP_TARGET": str(target), "PIP_QUIET": "1", "PIP_NO_INDEX": "1"}
    result = subprocess.run([sys.executable, "-m", "stackflask", "deps", "--install", "--config",
                             str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (target / "tiny_dep_cli" / "__init__.py").read_text() == "VALUE = 42\n"
