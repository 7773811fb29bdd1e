"""Validates an OpenAPI document (a file) against the OpenAPI 3.1 specification with
openapi-spec-validator (PyPI); exits 1 with the first problem."""

import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

spec, _ = read_from_filename(sys.argv[1])
assert spec["openapi"].startswith("3.1"), spec["openapi"]
validate(spec)
print(json.dumps({"paths": len(spec["paths"])}))
