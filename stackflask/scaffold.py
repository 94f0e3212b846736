"""``stackflask new``: API and provider packages, ready to install and test.

Authoring time, no Flask. Each command fills the ``string.Template`` files of
``stackflask/templates/api`` or ``templates/provider`` (``$name`` placeholders,
in paths too) with names derived from the one given, and writes a new folder.
The packages follow the External APIs page with its mistakes fixed: the
Protocol is defined where ``__init__.py`` says, methods take ``self``, a
remote spec's ``module`` sits in its adapter, and the run config names a provider.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import click
from click.decorators import FC

from .datatypes import check_api_name

if sys.version_info >= (3, 12):
    from importlib.resources import files
else:
    from importlib_resources import files

#: Lowercase words joined by single underscores: a module name, an API name,
#: and with hyphens a distribution name, all at once.
NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*\Z")

#: Output path (a template itself) -> template file, per package kind.
API_FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "src/$package/__init__.py": "__init__.py.tmpl",
    "apis.d/$name.yaml": "spec.yaml.tmpl",
    "tests/test_api.py": "test_api.py.tmpl",
}
PROVIDER_FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "src/$package/__init__.py": "__init__.py.tmpl",
    "$provider_file": "$kind.yaml.tmpl",
    "run.yaml": "run.yaml.tmpl",
    "tests/test_provider.py": "test_provider.py.tmpl",
}
#: ``--passthrough``: the built-in ``remote::stackflask`` needs no code.
PASSTHROUGH_FILES = {
    "README.md": "README.md.tmpl",
    "run.yaml": "run.yaml.tmpl",
}


def camel(name: str) -> str:
    """``my_thing`` -> ``MyThing``."""
    return "".join(word.capitalize() for word in name.split("_"))


@dataclass(frozen=True)
class ApiNames:
    """Every name of an API package, from the API name."""

    name: str

    @property
    def distribution(self) -> str:
        return f"{self.name.replace('_', '-')}-api"

    @property
    def package(self) -> str:
        return f"{self.name}_api"

    @property
    def protocol(self) -> str:
        return f"{camel(self.name)}Api"

    def placeholders(self) -> dict[str, str]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "package": self.package,
            "protocol": self.protocol,
        }


@dataclass(frozen=True)
class ProviderNames:
    """Every name of a provider package, from its name, its API and its kind."""

    name: str
    api: ApiNames
    kind: str

    @property
    def distribution(self) -> str:
        return f"{self.api.name.replace('_', '-')}-{self.name.replace('_', '-')}"

    @property
    def package(self) -> str:
        return f"{self.api.name}_{self.name}"

    @property
    def provider_type(self) -> str:
        return f"{self.kind}::{self.name}"

    def placeholders(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "distribution": self.distribution,
            "package": self.package,
            "provider_type": self.provider_type,
            "provider_file": f"providers.d/{self.kind}/{self.api.name}/{self.name}.yaml",
            "config_class": f"{camel(self.name)}Config",
            "impl_class": f"{camel(self.name)}{camel(self.api.name)}",
            "factory": "get_adapter_impl" if self.kind == "remote" else "get_provider_impl",
            "api": self.api.name,
            "api_distribution": self.api.distribution,
            "api_package": self.api.package,
            "protocol": self.api.protocol,
        }


def check_name(what: str, name: str) -> str:
    """``name``, or a :class:`click.BadParameter` (exit 2) saying what is allowed."""
    if not NAME.match(name):
        raise click.BadParameter(
            f"{name!r} is not a valid {what} name: use lowercase letters, digits and "
            "single underscores, starting with a letter (e.g. weather, my_api)"
        )
    return name


def api_name_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    name = check_name("API", value)
    reason = check_api_name(name)
    if reason:
        raise click.BadParameter(reason)
    return name


def provider_name_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    name = check_name("provider", value)
    if name == "api":
        raise click.BadParameter(
            "'api' would give the provider the API package's own name; choose another"
        )
    return name


def template(kind: str, filename: str) -> Template:
    return Template((files("stackflask") / "templates" / kind / filename).read_text("utf-8"))


def render(kind: str, layout: dict[str, str], placeholders: dict[str, str]) -> dict[str, str]:
    """Relative output path -> text, for every file of ``layout``."""
    return {
        Template(path).substitute(placeholders): template(
            kind, Template(source).substitute(placeholders)
        ).substitute(placeholders)
        for path, source in layout.items()
    }


def write_package(target: Path, rendered: dict[str, str]) -> None:
    """Create ``target`` with the rendered files; exit 1 if it already exists."""
    if target.exists():
        click.echo(
            f"error: {target}: already exists; remove it or choose another --dir", err=True
        )
        sys.exit(1)
    for relative, text in rendered.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    click.echo(f"created {target}/")
    for relative in rendered:
        click.echo(f"  {relative}")


def dir_option(func: FC) -> FC:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=".",
        show_default=True,
        help="Folder in which to create the package's folder.",
    )(func)


@click.group()
def new() -> None:
    """Create an API package or a provider package."""


@new.command("api")
@click.argument("name", callback=api_name_argument)
@dir_option
def new_api(name: str, directory: Path) -> None:
    """Create NAME-api/, the package of the API NAME (module NAME_api).

    A Protocol with one example webmethod (GET /NAME/hello),
    available_providers(), the apis.d spec, a README and a test.
    """
    names = ApiNames(name)
    placeholders = names.placeholders()
    write_package(directory / names.distribution, render("api", API_FILES, placeholders))
    click.echo(f"next: stackflask new provider NAME --api {name} --dir {shlex.quote(str(directory))}")


@new.command("provider", short_help="Create API-NAME/, the package of provider NAME for API.")
@click.argument("name", callback=provider_name_argument)
@click.option(
    "--api",
    required=True,
    callback=api_name_argument,
    help="The API it implements, as made by 'stackflask new api' (its package API_api).",
)
@click.option(
    "--remote/--inline",
    default=False,
    help="remote::NAME with get_adapter_impl, or inline::NAME with get_provider_impl "
    "(the default).",
)
@click.option(
    "--passthrough",
    is_flag=True,
    help="No code: a run.yaml serving API through another stackflask server "
    "(remote::stackflask, url from $API_NAME_URL) and a README.",
)
@dir_option
@click.pass_context
def new_provider(
    ctx: click.Context, name: str, api: str, remote: bool, passthrough: bool, directory: Path
) -> None:
    """Create API-NAME/, the package of provider NAME (module API_NAME).

    A dataclass config, the implementation, its factory, the providers.d
    spec, a run.yaml serving the API with it, a README and a test. With
    --passthrough, only a run.yaml and a README.
    """
    if passthrough and ctx.get_parameter_source("remote") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--passthrough writes no provider code: drop --remote/--inline")
    names = ProviderNames(name, ApiNames(api), "remote" if remote else "inline")
    api_package = directory / names.api.distribution
    # The package depends on the API's distribution (on no index) and its run.yaml
    # reads ../API-api/apis.d: without that folder it neither installs nor serves.
    spec = api_package / "apis.d" / f"{api}.yaml"
    if not spec.is_file():
        missing = spec if api_package.is_dir() else api_package
        click.echo(
            f"error: {missing}: not found; --api {api} needs the API package that "
            f"'stackflask new api {api}' makes, in the provider's --dir: run "
            f"'stackflask new api {api} --dir {shlex.quote(str(directory))}' first, "
            f"or pass the --dir that holds {names.api.distribution}/",
            err=True,
        )
        sys.exit(1)
    placeholders = names.placeholders()
    target = directory / names.distribution
    if passthrough:
        variable = f"{api}_{name}".upper()
        placeholders.update(url_variable=f"{variable}_URL", token_variable=f"{variable}_TOKEN")
        write_package(target, render("passthrough", PASSTHROUGH_FILES, placeholders))
        click.echo(f"next: pip install -e {shlex.quote(str(api_package))} httpx")
        return
    placeholders["provider_yaml"] = "".join(
        line
        for line in template("provider", f"{names.kind}.yaml.tmpl")
        .substitute(placeholders)
        .splitlines(keepends=True)
        if not line.startswith("#")
    )
    write_package(target, render("provider", PROVIDER_FILES, placeholders))
    click.echo(f"next: pip install -e {shlex.quote(str(api_package))} -e {shlex.quote(str(target))}")
