"""What ties the deployment files together, which no schema sees: the image's tool versions
match the repository's, every file a manifest or the Compose file names exists, every
Kubernetes reference (ConfigMap, Secret, Service, selector, probe port) points at something
defined, and every setting they set is in the README's Configuration table.

Run by scripts/validate-deploy.sh from the repository's root; prints each problem and exits 1
when there is one."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Manifests applied on their own rather than through kustomization.yaml.
APPLIED_SEPARATELY = {"secret.example.yaml", "ollama.yaml"}

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def rel(path):
    return path.relative_to(ROOT)


def dockerfile_args(text):
    return dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text, re.M))


def check_versions():
    args = dockerfile_args((DEPLOY / "Dockerfile").read_text())
    lock = (ROOT / "Cargo.lock").read_text()
    wasm_bindgen = re.search(r'^name = "wasm-bindgen"\nversion = "([^"]+)"', lock, re.M)
    if not wasm_bindgen or args.get("WASM_BINDGEN_VERSION") != wasm_bindgen.group(1):
        problem("deploy/Dockerfile", f"ARG WASM_BINDGEN_VERSION={args.get('WASM_BINDGEN_VERSION')} "
                f"but Cargo.lock has wasm-bindgen {wasm_bindgen and wasm_bindgen.group(1)}")
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    leptos = re.search(r'^CARGO_LEPTOS_VERSION="([^"]+)"', setup, re.M)
    if not leptos or args.get("CARGO_LEPTOS_VERSION") != leptos.group(1):
        problem("deploy/Dockerfile", f"ARG CARGO_LEPTOS_VERSION={args.get('CARGO_LEPTOS_VERSION')} "
                f"but scripts/setup.sh installs {leptos and leptos.group(1)}")


def check_compose():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    settings = {}
    for name, service in compose["services"].items():
        where = f"deploy/compose.yaml: services.{name}"
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            if not (DEPLOY / f"{path}.example").is_file():
                problem(where, f"env_file {path} has no {path}.example to copy it from")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(".") and not (DEPLOY / source).exists():
                problem(where, f"mounts {source}, which does not exist")
        build = service.get("build")
        if build and not (DEPLOY / build["context"] / build["dockerfile"]).is_file():
            problem(where, f"builds {build['dockerfile']}, which does not exist")
        if "image" in service and "tessera" in str(service["image"]):
            settings.update(service.get("environment", {}) or {})
    return settings


def load_manifests(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def check_kubernetes():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    for name in sorted(listed):
        if not (K8S / name).is_file():
            problem("deploy/k8s/kustomization.yaml", f"lists {name}, which does not exist")
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    for path in files:
        if path.name not in listed and path.name not in APPLIED_SEPARATELY:
            problem(rel(path), "is neither in kustomization.yaml nor applied on its own")

    # The README migrates first with `kubectl apply -k deploy/k8s -l 'app.kubernetes.io/component
    # in (config, migrate)'`: that must take the migration Job and every ConfigMap it reads.
    first = {"config", "migrate"}
    for name in sorted(listed):
        if not (K8S / name).is_file():
            continue
        for doc in load_manifests(K8S / name):
            component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            wanted = doc["kind"] in ("ConfigMap", "Job")
            if wanted != (component in first):
                problem(f"deploy/k8s/{name}: {doc['kind']} {doc['metadata']['name']}",
                        "the README's first apply (component config or migrate) "
                        + ("misses it" if wanted else "would take it too"))

    resources = {}
    for path in files:
        for doc in load_manifests(path):
            resources.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = (path, doc)
    defined = lambda kind, name: name in resources.get(kind, {})  # noqa: E731

    settings = {}
    for kind in ("ConfigMap", "Secret"):
        for _, doc in resources.get(kind, {}).values():
            settings.update(doc.get("data") or {})
            settings.update(doc.get("stringData") or {})

    workloads = {}
    for kind in ("Deployment", "Job"):
        for name, (path, doc) in resources.get(kind, {}).items():
            workloads[(kind, name)] = (path, doc)
    for (kind, name), (path, doc) in workloads.items():
        where = f"{rel(path)}: {kind} {name}"
        template = doc["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        selector = doc["spec"].get("selector", {}).get("matchLabels")
        if selector and any(labels.get(k) != v for k, v in selector.items()):
            problem(where, "its selector does not match its pod template's labels")
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                for ref_kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source and not defined(ref_kind, source[key]["name"]):
                        problem(where, f"reads {ref_kind} {source[key]['name']}, which no manifest defines")
            for env in container.get("env", []):
                if "value" in env and container["image"] == "tessera":
                    settings[env["name"]] = env["value"]
            port_names = {p.get("name") for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    problem(where, f"{probe} uses port {port}, which the container does not name")
        for volume in template["spec"].get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and not defined("PersistentVolumeClaim", claim):
                problem(where, f"mounts claim {claim}, which no manifest defines")

    pods = [doc["spec"]["template"]["metadata"].get("labels", {}) for _, doc in workloads.values()]
    selects_pods = lambda sel: any(all(l.get(k) == v for k, v in sel.items()) for l in pods)  # noqa: E731
    for kind in ("Service", "PodDisruptionBudget"):
        for name, (path, doc) in resources.get(kind, {}).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector) if kind != "Service" else selector
            if not selects_pods(selector):
                problem(f"{rel(path)}: {kind} {name}", "selects no pod of any workload here")
    for name, (path, doc) in resources.get("HorizontalPodAutoscaler", {}).items():
        target = doc["spec"]["scaleTargetRef"]
        if not defined(target["kind"], target["name"]):
            problem(f"{rel(path)}: HorizontalPodAutoscaler {name}",
                    f"scales {target['kind']} {target['name']}, which no manifest defines")
    for name, (path, doc) in resources.get("Ingress", {}).items():
        for rule in doc["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                service = p["backend"]["service"]
                if not defined("Service", service["name"]):
                    problem(f"{rel(path)}: Ingress {name}", f"routes to Service {service['name']}, which no manifest defines")
                    continue
                ports = resources["Service"][service["name"]][1]["spec"]["ports"]
                wanted = service["port"].get("name") or service["port"].get("number")
                if not any(wanted in (port.get("name"), port.get("port")) for port in ports):
                    problem(f"{rel(path)}: Ingress {name}", f"uses port {wanted} of Service {service['name']}, which it does not have")
    return settings


def env_example_settings():
    text = (DEPLOY / "tessera.env.example").read_text()
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, re.M))


def check_documented(names):
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, re.M))
    for name in sorted(names - documented):
        problem("README.md", f"{name} is set by the deployment files but not in the Configuration table")


check_versions()
compose_settings = check_compose()
kubernetes_settings = check_kubernetes()
dockerfile_env = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", "".join(
    re.findall(r"^ENV (?:.*\\\n)*.*$", (DEPLOY / "Dockerfile").read_text(), re.M))))
check_documented(set(compose_settings) | set(kubernetes_settings) | env_example_settings() | dockerfile_env)

if problems:
    print("\n".join(problems))
    sys.exit(1)
print("ok -- versions, references and documented settings agree")
