"""Strict JSON Schemas for KServe's custom resources, built from KServe's own Python SDK.

No package on PyPI or npm ships KServe's CRD YAML. The SDK (`kserve` on PyPI) carries a generated
model class per API type (`kserve/models/v1beta1_model_spec.py`, ...), generated from the same Go
types as the CRDs: `attribute_map` names every field as it appears in YAML, `openapi_types` gives
its type, and the setters refuse None for required fields. Those become one JSON Schema per type with
`additionalProperties: false`, so a misspelt field is an error, as `kubectl apply --validate=strict`
reports it. The Kubernetes types they embed (`V1Container`, `V1Toleration`, ...) are the strict
schemas that kubernetes-validate ships. The files are read as text (ast), never imported: the SDK's
package imports a server framework.
"""

from __future__ import annotations

import ast
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from kubernetes_validate.utils import latest_version

SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "object": {},  # free-form (x-kubernetes-preserve-unknown-fields)
    "ResourceQuantity": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"},
}
KSERVE_PREFIX = re.compile(r"^V1(alpha|beta)\d")
# K8sIoApiAppsV1DeploymentStrategy -> io.k8s.api.apps.v1.DeploymentStrategy
QUALIFIED = re.compile(r"^K8sIoApi([A-Z][a-z]+)(V\d(?:(?:alpha|beta)\d)?)([A-Z]\w*)$")
# V1Container -> io.k8s.api.core.v1.Container (or another group's v1.Container)
KUBERNETES = re.compile(r"^(V\d(?:(?:alpha|beta)\d)?)([A-Z]\w*)$")
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def read_models(models_dir: Path) -> dict[str, tuple[dict[str, str], set[str]]]:
    """Class name -> ({YAML field: SDK type}, required YAML fields), from the SDK's model files."""
    models = {}
    for path in sorted(models_dir.glob("v1*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            tables = {
                target.id: ast.literal_eval(statement.value)
                for statement in node.body
                if isinstance(statement, ast.Assign)
                for target in statement.targets
                if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map")
            }
            if set(tables) != {"openapi_types", "attribute_map"}:
                continue
            names = tables["attribute_map"]
            fields = {names[attribute]: kind for attribute, kind in tables["openapi_types"].items()}
            required = {
                names[attribute] for attribute in REQUIRED.findall(ast.get_source_segment(source, node) or "")
            }
            models[node.name] = (fields, required)
    return models


def kubernetes_definitions() -> dict[str, Any]:
    """The strict definitions of the newest Kubernetes that kubernetes-validate knows (KServe's pod
    fields follow recent Kubernetes)."""
    folder = f"kubernetes-json-schema/v{latest_version()}-local-strict"
    text = resources.files("kubernetes_validate").joinpath(folder, "_definitions.json").read_text()
    return json.loads(text)["$defs"]  # type: ignore[no-any-return]


class KServeSchemas:
    def __init__(self, models_dir: Path) -> None:
        self.models = read_models(models_dir)
        self.kubernetes = kubernetes_definitions()
        self.unresolved: set[str] = set()
        self.definitions: dict[str, Any] = dict(self.kubernetes)
        for name, (fields, required) in self.models.items():
            self.definitions[f"kserve.{name}"] = {
                "type": "object",
                "properties": {field: self._schema(kind) for field, kind in fields.items()},
                "required": sorted(required),
                "additionalProperties": False,
            }

    def _kubernetes_ref(self, group: str | None, version: str, name: str) -> dict[str, Any] | None:
        version = version.lower()
        candidates = [
            key
            for key in self.kubernetes
            if key.endswith(f".{version}.{name}") and (group is None or f".api.{group.lower()}." in key)
        ]
        candidates.sort(key=lambda key: (".api.core." not in key, ".apimachinery." not in key, key))
        return {"$ref": f"#/$defs/{candidates[0]}"} if candidates else None

    def _schema(self, kind: str) -> dict[str, Any]:
        kind = kind.strip()
        if kind in SCALARS:
            return SCALARS[kind]
        if kind.startswith("list[") and kind.endswith("]"):
            return {"type": "array", "items": self._schema(kind[5:-1])}
        if kind.startswith("dict(") and kind.endswith(")"):
            return {"type": "object", "additionalProperties": self._schema(kind[5:-1].partition(",")[2])}
        if kind in self.models:
            return {"$ref": f"#/$defs/kserve.{kind}"}
        qualified, plain = QUALIFIED.match(kind), KUBERNETES.match(kind)
        ref = None
        if qualified:
            ref = self._kubernetes_ref(*qualified.groups())
        elif plain and not KSERVE_PREFIX.match(kind):
            ref = self._kubernetes_ref(None, *plain.groups())
        if ref is None:  # Knative status types and the like: never in a manifest's spec
            self.unresolved.add(kind)
            return {}
        return ref

    def validate(self, obj: dict[str, Any]) -> None:
        """Raises jsonschema.ValidationError for an unknown field, a wrong type or a missing field."""
        version = obj.get("apiVersion", "").rpartition("/")[2].capitalize()
        model = f"{version}{obj.get('kind')}"
        if model not in self.models:
            raise jsonschema.ValidationError(
                f"no KServe schema for {obj.get('apiVersion')} {obj.get('kind')}"
            )
        schema = {"$ref": f"#/$defs/kserve.{model}", "$defs": self.definitions}
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            raise error
