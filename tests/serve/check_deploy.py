"""Checks the deployment files as far as a machine without a cluster, Slurm or a Docker engine
allows (test router.deploy):
  - every option the Kubernetes manifests, the Slurm scripts and the Dockerfile pass to tpkit-serve
    or tpkit-router is one the program's --help lists;
  - the manifests are valid Kubernetes objects (kubernetes-validate --strict, from PyPI into a venv
    beside the build; only parsed as YAML where PyPI cannot be reached);
  - the shell scripts parse (bash -n), and the binaries sit where the Dockerfile copies them from;
  - scripts/serve-replicas.sh starts 2 replicas and a router that answers a completion, and stops
    them all on SIGTERM.
Usage: check_deploy.py SOURCE_DIR BUILD_DIR MODEL.bin VENV_DIR
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

source, build, model, venv = sys.argv[1:5]
deploy = os.path.join(source, "deploy")
programs = {"tpkit-serve": os.path.join(build, "serve", "tpkit-serve"),
            "tpkit-router": os.path.join(build, "router", "tpkit-router")}
failures = []


def options_of(program):
    out = subprocess.run([programs[program], "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


known = {p: options_of(p) for p in programs}


def check_words(words, where):
    """The options in a command line's words that follow a tpkit program's name."""
    program = None
    for w in words:
        name = os.path.basename(w)
        if name in programs:
            program = name
            continue
        if program and w.startswith("--"):
            option = w.split("=")[0]
            if option not in known[program]:
                failures.append(f"{where}: {program} has no option {option}")


# Kubernetes manifests: each container's args.
manifests = sorted(os.path.join(deploy, "kubernetes", f) for f in os.listdir(os.path.join(deploy, "kubernetes")))
for path in manifests:
    text = open(path).read()
    for args in re.findall(r"args:\s*(\[[^\]]*\])", text, re.S):
        check_words(json.loads(args), path)

# Slurm scripts and the Dockerfile: the commands that run a tpkit program (continued lines joined).
for path in [os.path.join(deploy, "slurm", f) for f in os.listdir(os.path.join(deploy, "slurm"))] + \
        [os.path.join(deploy, "Dockerfile")]:
    text = open(path).read().replace("\\\n", " ")
    for line in text.splitlines():
        if "tpkit-serve" in line or "tpkit-router" in line:
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            check_words([re.sub(r'^"?\$bin/(serve|router)/', "", w) for w in words], path)
    if path.endswith(".sbatch"):
        r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        if r.returncode:
            failures.append(f"{path} does not parse: {r.stderr}")

# The Dockerfile copies the binaries from where a build puts them.
docker = open(os.path.join(deploy, "Dockerfile")).read()
for binary in re.findall(r"/build/((?:serve|router)/tpkit-[a-z]+)", docker):
    if not os.path.exists(os.path.join(build, binary)):
        failures.append(f"Dockerfile copies /build/{binary}, which a build does not make")

# The manifests against Kubernetes' schemas.
validator = os.path.join(venv, "bin", "kubernetes-validate")
if not os.path.exists(validator):
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                    "kubernetes-validate==1.37.0"], capture_output=True)
if os.path.exists(validator):
    r = subprocess.run([validator, "--strict", "-k", "1.32.0"] + manifests, capture_output=True, text=True)
    if r.returncode or "ERROR" in r.stdout + r.stderr:
        failures.append("the manifests are not valid Kubernetes objects:\n" + r.stdout + r.stderr)
    else:
        print(f"manifests valid against Kubernetes 1.32 ({len(manifests)} files)")
else:
    print("kubernetes-validate could not be installed (no PyPI?): manifests not checked against the schemas")

# The launcher: 2 replicas and a router, a completion through it, SIGTERM stops everything.
launcher = subprocess.Popen(["bash", os.path.join(source, "scripts", "serve-replicas.sh"), "--bin", build,
                             "--model", model, "--replicas", "2", "--port", "0", "--", "--served-model-name",
                             "stories"], stdout=subprocess.PIPE, text=True, start_new_session=True)
deadline = time.time() + 120
line = ""
while time.time() < deadline and "listening on" not in line:
    line = launcher.stdout.readline()
    if not line and launcher.poll() is not None:
        break
url = re.search(r"listening on (http://\S+)", line)
if not url:
    failures.append(f"serve-replicas.sh did not report its router: {line!r}")
else:
    request = urllib.request.Request(url.group(1) + "/v1/completions", method="POST",
                                     data=json.dumps({"prompt": "Once upon a time", "max_tokens": 8,
                                                      "temperature": 0}).encode(),
                                     headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    stats = json.load(urllib.request.urlopen(url.group(1) + "/stats", timeout=10))
    if not answer["choices"][0]["text"] or stats["totals"]["workers"] != 2 or stats["totals"]["healthy"] != 2:
        failures.append(f"through serve-replicas.sh: {answer} {stats['totals']}")
    else:
        print(f"serve-replicas.sh: 2 replicas behind {url.group(1)} answered")
launcher.send_signal(signal.SIGTERM)
try:
    launcher.wait(timeout=60)
except subprocess.TimeoutExpired:
    failures.append("serve-replicas.sh did not stop within 60 s of SIGTERM")
    os.killpg(launcher.pid, signal.SIGKILL)
time.sleep(0.5)
left = subprocess.run(["pgrep", "-s", str(launcher.pid)], capture_output=True, text=True).stdout.split()
if left:
    failures.append(f"serve-replicas.sh left processes running: {left}")
    os.killpg(launcher.pid, signal.SIGKILL)

for f in failures:
    print("FAILED:", f)
sys.exit(1 if failures else 0)
