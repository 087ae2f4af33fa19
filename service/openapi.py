"""OpenAPI descriptions of the request bodies the routes parse by hand.

The routes read raw bodies (to validate before batching, without pydantic on large arrays), so
FastAPI cannot infer their schemas; this module states them, so that `/docs` shows clients what to
send and schema-driven fuzzers (schemathesis) generate real bodies for every route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

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
QUERY: dict[str, list[dict[str, Any]]] = {"/predict": [INCLUDE]}
BODIES: dict[str, dict[str, Any]] = {
    "/predict": PREDICT_BODY,
    "/v2/models/{name}/infer": INFER_BODY,
    "/v2/models/{name}/versions/{version}/infer": INFER_BODY,
}


def describe_bodies(app: FastAPI) -> None:
    """Attach the request bodies and error responses to the routes (before the schema is built)."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path in BODIES:
            route.openapi_extra = {
                "requestBody": BODIES[route.path],
                "responses": {str(code): ERROR for code in (400, 401, 413, 415, 422, 503, 504)},
            }
            if route.path in QUERY:
                route.openapi_extra["parameters"] = QUERY[route.path]
