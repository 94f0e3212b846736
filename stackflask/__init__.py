"""stackflask: pluggable, typed HTTP APIs served by Flask.

An API is a ``typing.Protocol`` whose async methods carry ``@webmethod``; a
provider implements it; YAML files say which to serve. :func:`create_app`
builds the Flask app that serves every webmethod at ``/v1`` + its route.
"""

from __future__ import annotations

from .auth import Principal, get_principal
from .context import NeedsRequestProviderData, get_provider_data
from .datatypes import (
    AdapterSpec,
    Api,
    InlineProviderSpec,
    ProviderSpec,
    RemoteProviderSpec,
    remote_provider_spec,
)
from .factory import create_app
from .params import Body, File, Form, Path, Query
from .problems import StartupError
from .uploads import UploadFile
from .webmethod import WebMethod, webmethod

__version__ = "0.1.0"

__all__ = [
    "AdapterSpec",
    "Api",
    "Body",
    "File",
    "Form",
    "InlineProviderSpec",
    "NeedsRequestProviderData",
    "Path",
    "Principal",
    "ProviderSpec",
    "Query",
    "RemoteProviderSpec",
    "StartupError",
    "UploadFile",
    "WebMethod",
    "create_app",
    "get_principal",
    "get_provider_data",
    "remote_provider_spec",
    "webmethod",
]
