#!/usr/bin/env python3
"""Offline checks of deploy/ that need more than a shell: run by scripts/check-deploy.sh.

  lint_deploy.py dashboards DIR...      Grafana dashboards: valid JSON, every panel has a
                                        title, a unit and a description, every datasource
                                        is the ${datasource} variable, every metric name
                                        is a constant of shared/src/metrics.rs.
  lint_deploy.py rule-names FILE...     every metric name in Prometheus rule files is such
                                        a constant.
  lint_deploy.py without-kubernetes-sd IN OUT
                                        writes IN with each kubernetes_sd_configs replaced
                                        by an empty static_configs (for a promtool built
                                        without Kubernetes discovery, e.g. Debian's), after
                                        checking those blocks' fields by hand.
Exits 1 with one line per problem.
"""
import glob
import json
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METRIC = re.compile(r"\bshardline_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def known_names():
    with open(os.path.join(ROOT, "shared/src/metrics.rs")) as f:
        names = set(re.findall(r'pub const [A-Z0-9_]+: &str\s*=\s*"([a-z0-9_]+)"', f.read()))
    if not names:
        sys.exit("lint: no metric name constants found in shared/src/metrics.rs")
    return names


def unknown_metrics(expr, names):
    bad = []
    for m in METRIC.findall(expr):
        base = m
        for suffix in HISTOGRAM_SUFFIXES:
            if m.endswith(suffix) and m[: -len(suffix)] in names:
                base = m[: -len(suffix)]
        if base not in names:
            bad.append(m)
    return bad


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def lint_dashboards(paths):
    names, problems, uids = known_names(), [], {}
    files = [f for p in paths for f in (sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p])]
    if not files:
        problems.append("no dashboards found in " + " ".join(paths))
    for path in files:
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: not valid JSON: {e}")
            continue
        where = os.path.basename(path)
        for key in ("uid", "title", "panels", "templating", "schemaVersion"):
            if key not in d:
                problems.append(f"{where}: no {key}")
        if d.get("schemaVersion", 0) < 36:
            problems.append(f"{where}: schemaVersion {d.get('schemaVersion')} is older than Grafana 9/10 (36+)")
        if d.get("uid") in uids:
            problems.append(f"{where}: uid {d['uid']} also used by {uids[d['uid']]}")
        uids[d.get("uid")] = where
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            problems.append(f"{where}: no `datasource` variable of type datasource")
        for v in variables.values():
            if v.get("type") == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: variable {v.get('name')} does not use ${{datasource}}")
        all_panels = list(panels(d.get("panels", [])))
        if not all_panels:
            problems.append(f"{where}: no panels")
        ids = [p.get("id") for p in all_panels]
        if len(ids) != len(set(ids)):
            problems.append(f"{where}: duplicate panel ids")
        for p in all_panels:
            title = p.get("title", "").strip()
            at = f"{where}: panel {p.get('id')} {title!r}"
            if not title:
                problems.append(f"{at}: no title")
            if not p.get("description", "").strip():
                problems.append(f"{at}: no description")
            if p.get("type") == "row":
                continue
            if not p.get("fieldConfig", {}).get("defaults", {}).get("unit", "").strip():
                problems.append(f"{at}: no unit (fieldConfig.defaults.unit)")
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{at}: datasource is not ${{datasource}}")
            targets = p.get("targets", [])
            if not targets:
                problems.append(f"{at}: no targets")
            for t in targets:
                expr = t.get("expr", "")
                if not expr.strip():
                    problems.append(f"{at}: target {t.get('refId')} has no expr")
                if t.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                    problems.append(f"{at}: target {t.get('refId')} datasource is not ${{datasource}}")
                for m in unknown_metrics(expr, names):
                    problems.append(f"{at}: {m} is not a name in shared/src/metrics.rs")
    return problems, f"{len(files)} dashboards"


def lint_rule_names(paths):
    import yaml

    names, problems, count = known_names(), [], 0
    for path in paths:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                count += 1
                for m in unknown_metrics(rule.get("expr", ""), names):
                    problems.append(f"{path}: {rule.get('alert') or rule.get('record')}: {m} is not a name in shared/src/metrics.rs")
    return problems, f"{count} rules"


# The fields of a kubernetes_sd_config (Prometheus docs, configuration.md).
K8S_SD_FIELDS = {
    "api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
    "basic_auth", "authorization", "oauth2", "proxy_url", "no_proxy", "proxy_from_environment",
    "proxy_connect_header", "follow_redirects", "enable_http2", "tls_config",
}
K8S_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


def without_kubernetes_sd(src, dst):
    import yaml

    with open(src) as f:
        doc = yaml.safe_load(f)
    problems, replaced = [], 0
    for job in doc.get("scrape_configs", []):
        blocks = job.pop("kubernetes_sd_configs", None)
        if blocks is None:
            continue
        replaced += 1
        for b in blocks:
            extra = set(b) - K8S_SD_FIELDS
            if extra:
                problems.append(f"{src}: job {job.get('job_name')}: unknown kubernetes_sd_configs fields {sorted(extra)}")
            if b.get("role") not in K8S_ROLES:
                problems.append(f"{src}: job {job.get('job_name')}: kubernetes_sd_configs role {b.get('role')!r} is not one of {sorted(K8S_ROLES)}")
            ns = b.get("namespaces", {})
            if set(ns) - {"names", "own_namespace"}:
                problems.append(f"{src}: job {job.get('job_name')}: unknown namespaces fields {sorted(set(ns) - {'names', 'own_namespace'})}")
        job.setdefault("static_configs", []).append({"targets": []})
    with open(dst, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return problems, f"{replaced} jobs with Kubernetes discovery"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "dashboards":
        problems, what = lint_dashboards(args)
    elif cmd == "rule-names":
        problems, what = lint_rule_names(args)
    elif cmd == "without-kubernetes-sd" and len(args) == 2:
        problems, what = without_kubernetes_sd(*args)
    else:
        sys.exit(__doc__)
    for p in problems:
        print("lint:", p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"lint {cmd}: ok ({what})")


if __name__ == "__main__":
    main()
