// Validate Prometheus Operator objects against the CRD schemas (@kubernetes-models/prometheus-operator),
// strictly: a field the schema does not declare is an error, as `kubectl apply --validate=strict` (the
// API server's strict field validation) reports it; the package's own check ignores unknown fields.
// stdin: a JSON list of objects; stdout: a JSON list of {kind, name, error} (error null when valid).
//
// How unknown fields are found: the package's validators are compiled JSON Schema code that reads
// every property its schema declares (`data.endpoints`, ...) and enumerates the keys of a map
// (`labels`). The object is validated through proxies that record those reads; a key of an object
// that the validator read from, but never by that key, is not in the schema. An object the validator
// never looked into (a free-form `x-kubernetes-preserve-unknown-fields` field) is left alone.
import { readFileSync } from "node:fs";

const SCHEMAS = "./node_modules/@kubernetes-models/prometheus-operator/_schemas/";
const PREFIX = "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1";
const validators = {};
for (const kind of ["PrometheusRule", "ServiceMonitor"]) {
  // By file: the package's exports map hides the schema modules.
  validators[kind] = (await import(new URL(`${SCHEMAS}${PREFIX}${kind}.js`, import.meta.url))).validate;
}

function tracked(root) {
  const seen = new Map(); // the real object -> {path, proxy, read: Set of keys, listed}
  const wrap = (value, path) => {
    if (value === null || typeof value !== "object") return value;
    let entry = seen.get(value);
    if (!entry) {
      entry = { path, read: new Set(), listed: false };
      entry.proxy = new Proxy(value, {
        get(target, key, receiver) {
          if (typeof key === "string") entry.read.add(key);
          const child = Reflect.get(target, key, receiver);
          return Object.hasOwn(target, key) ? wrap(child, `${path}/${String(key)}`) : child;
        },
        ownKeys(target) {
          entry.listed = true;
          return Reflect.ownKeys(target);
        },
      });
      seen.set(value, entry);
    }
    return entry.proxy;
  };
  const unknown = () =>
    [...seen.entries()]
      .filter(([value, entry]) => !Array.isArray(value) && entry.read.size > 0 && !entry.listed)
      .flatMap(([value, entry]) => Object.keys(value).filter((key) => !entry.read.has(key)).map((key) => `${entry.path}/${key}`));
  return { proxy: wrap(root, ""), unknown };
}

function check(object) {
  const validate = validators[object.kind];
  if (!validate) return "no schema for this kind";
  const { proxy, unknown } = tracked(object);
  if (!validate(proxy)) {
    return validate.errors.map((e) => `${e.instancePath || "/"} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`).join("; ");
  }
  const fields = unknown();
  return fields.length ? `unknown field(s): ${fields.join(", ")}` : null;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((object) => {
  try {
    return { kind: object.kind, name: object.metadata?.name, error: check(object) };
  } catch (error) {
    return { kind: object.kind, name: object.metadata?.name, error: String(error.message ?? error) };
  }
});
process.stdout.write(JSON.stringify(results));
