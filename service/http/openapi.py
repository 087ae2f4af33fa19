"""OpenAPI descriptions of the inference routes, which FastAPI does not see.

The inference routes are answered before FastAPI, from raw bodies (validated before batching,
without pydantic on large arrays), so FastAPI can neither list them nor infer their schemas; this
module states them, so that `/docs` shows clients what to send and schema-driven fuzzers
(schemathesis) generate real bodies for every route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

PIXEL = {"type": "integer", "minimum": 0, "maximum": 255}
ERROR = {
    "description": "the request was refused",
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
    },
}
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["pixels"],
                        "properties": {
                            "pixels": {
                                "description": "28x28 or 784 values 0-255 (white on black), or a list",
                                "type": "array",
                                "items": {"oneOf": [PIXEL, {"type": "array"}]},
                            }
                        },
                    },
                    {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}},
                    {
                        "type": "object",
                        "required": ["images"],
                        "properties": {"images": {"type": "array", "items": {"type": "string"}}},
                    },
                ]
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }
        },
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "shape", "datatype"],
                            "properties": {
                                "name": {"type": "string", "example": "pixels"},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string", "enum": ["UINT8", "FP32"]},
                                "data": {"type": "array", "items": {"type": "number"}},
                                "parameters": {"type": "object"},
                            },
                        },
                    },
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "parameters": {"type": "object"},
                },
            }
        }
    },
}
INCLUDE = {
    "name": "include",
    "in": "query",
    "required": False,
    "description": "'pixels': each prediction also carries the 28x28 image the model saw",
    "schema": {"type": "string", "enum": ["pixels"]},
}
PATH_PARAMETERS = {
    name: {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    for name in ("name", "version")
}
ANSWER = {
    "description": "one prediction per image, in order",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
V2_ANSWER = {
    "description": "the output tensor (JSON, or binary with Inference-Header-Content-Length)",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
ERRORS = {str(code): ERROR for code in (400, 401, 404, 405, 413, 415, 422, 503, 504)}


def _operation(
    operation_id: str, summary: str, body: dict[str, Any], answer: dict[str, Any], parameters: list[Any]
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "requestBody": body,
            "responses": {"200": answer, **ERRORS},
        }
    }


# The inference routes are answered before FastAPI (service.http.inference), so FastAPI cannot list
# them: they are described here.
INFERENCE_PATHS: dict[str, dict[str, Any]] = {
    "/predict": _operation(
        "predict",
        "Classify one or more digit images: multipart upload, raw image body, or JSON (base64 or pixels)",
        PREDICT_BODY,
        ANSWER,
        [INCLUDE],
    ),
    "/v2/models/{name}/infer": _operation(
        "v2_infer",
        "Open Inference Protocol v2 inference: JSON tensors or Triton's binary tensor extension",
        INFER_BODY,
        V2_ANSWER,
        [PATH_PARAMETERS["name"]],
    ),
    "/v2/models/{name}/versions/{version}/infer": _operation(
        "v2_infer_version",
        "Open Inference Protocol v2 inference with a given model version",
        INFER_BODY,
        V2_ANSWER,
        [PATH_PARAMETERS["name"], PATH_PARAMETERS["version"]],
    ),
}


def describe_inference_routes(app: FastAPI) -> None:
    """Add the inference routes to the app's OpenAPI schema (``/openapi.json`` and ``/docs``)."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            schema["paths"] = {**INFERENCE_PATHS, **schema["paths"]}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
