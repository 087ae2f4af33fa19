// Validate Prometheus Operator objects against the CRD schemas (@kubernetes-models/prometheus-operator).
// stdin: a JSON list of objects; stdout: a JSON list of {kind, name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PrometheusRule, ServiceMonitor };
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((object) => {
  const Model = models[object.kind];
  if (!Model) return { kind: object.kind, name: object.metadata?.name, error: "no schema for this kind" };
  try {
    new Model(object).validate();
    return { kind: object.kind, name: object.metadata.name, error: null };
  } catch (error) {
    return { kind: object.kind, name: object.metadata?.name, error: String(error.message ?? error) };
  }
});
process.stdout.write(JSON.stringify(results));
