#!/usr/bin/env bash
# The project as a user installs it: build the wheel, install it into a fresh virtual environment
# outside the checkout and, from an empty folder, run `inception-explorer info`, a three-trial smoke
# search, an export of that study and the dashboard (its health endpoint and the page itself).
#
# The fresh environment reuses the dependencies already installed in $VENV (default .venv) through
# a .pth file pointing at links to them, the project's own files left out, so that the check does
# not copy torch again; the project itself comes only from the wheel, which is asserted.
#
# Usage: .ci/wheel-smoke.sh   (after `make setup`; exits non-zero on the first failure)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "wheel-smoke: no $PY; run make setup first" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wheel-smoke.XXXXXX")
DASH_PID=
cleanup() {
  if [ -n "$DASH_PID" ] && kill -0 "$DASH_PID" 2>/dev/null; then
    kill "$DASH_PID" 2>/dev/null || true
    for _ in $(seq 15); do kill -0 "$DASH_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DASH_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
step() { echo "wheel-smoke: $(date +%T) $*"; }
fail() { echo "wheel-smoke: FAILED: $*" >&2; exit 1; }

# 1. The wheel, built from a clean copy of the sources (a stale build/ in the checkout could
#    otherwise put files of an older layout into it).
step "building the wheel"
mkdir -p "$TMP/src" "$TMP/dist"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$ROOT" --null --no-recursion --ignore-failed-read -T - -cf - | tar -xf - -C "$TMP/src"
else
  tar -cf - --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=./studies . \
    | tar -xf - -C "$TMP/src"
fi
isolation=()  # build offline with $VENV's setuptools when it is recent enough
if "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
  isolation=(--no-build-isolation)
fi
timeout 300 "$PY" -m pip wheel -q --no-deps "${isolation[@]}" -w "$TMP/dist" "$TMP/src"
WHEEL=$(ls "$TMP"/dist/inception_explorer-*.whl)
"$PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
assert tops == ["explorer", "search_space"], f"top-level names in the wheel: {tops}"
for need in ("explorer/cli.py", "explorer/__main__.py", "explorer/dashboard/main.py",
             "explorer/dashboard/details.py", "explorer/export/standalone.py",
             "search_space/models/googlenet.py"):
    assert need in names, f"{need} is not in the wheel"
entry = [n for n in names if n.endswith("entry_points.txt")]
assert entry and b"inception-explorer = explorer.cli:main" in zipfile.ZipFile(sys.argv[1]).read(entry[0])
print(f"wheel-smoke: {len(names)} files, top-level packages {tops}")
EOF

# 2. A fresh environment of the same interpreter; dependencies linked from $VENV.
step "installing it into a fresh virtual environment"
"$PY" -m venv --without-pip "$TMP/venv"
VPY="$TMP/venv/bin/python"
DEPS=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
LINKS="$TMP/deps/site-packages"  # so named: streamlit takes a path without it for a source checkout
mkdir -p "$LINKS"
for entry in "$DEPS"/*; do
  case "$(basename "$entry")" in
    explorer | search_space | app | inception_explorer* | __editable__* | *.pth) ;;
    *) ln -s "$entry" "$LINKS/" ;;
  esac
done
echo "$LINKS" >"$SITE/_wheel_smoke_deps.pth"
timeout 300 "$PY" -m pip --python "$VPY" install -q --no-deps "$WHEEL"
BIN="$TMP/venv/bin"
[ -x "$BIN/inception-explorer" ] || fail "the wheel installed no inception-explorer script"

mkdir "$TMP/work"
cd "$TMP/work"  # nothing of the checkout on the path from here on
export PATH="$BIN:$PATH"
unset PYTHONPATH EXPLORER_STORAGE EXPLORER_STUDY EXPLORER_ARTIFACTS EXPLORER_STUDIES_DIR
"$VPY" - "$SITE" <<'EOF'
import importlib.util, sys
from pathlib import Path
import explorer, explorer.cli
site = Path(sys.argv[1]).resolve()
assert Path(explorer.__file__).resolve().is_relative_to(site), f"explorer from {explorer.__file__}"
assert importlib.util.find_spec("app") is None, "a top-level 'app' is importable"
page = explorer.cli.dashboard_page()
assert page.resolve().is_relative_to(site / "explorer" / "dashboard"), f"page {page}"
assert explorer.cli.command_prefix() == "inception-explorer", explorer.cli.command_prefix()
print(f"wheel-smoke: explorer from {explorer.__file__}")
EOF

# 3. The commands, as a new user runs them.
step "inception-explorer info"
timeout 120 inception-explorer info >info.txt || fail "info: $(tail -n 5 info.txt)"
grep -q "search space 'inception-block'" info.txt || fail "info printed no search space"
grep -q "^studies: $(pwd -P)/studies/explorer.journal" info.txt \
  || fail "info does not look for studies in the current folder: $(grep studies: info.txt)"
timeout 60 inception-explorer bogus 2>err.txt && fail "a bad command exited 0"
[ $? -eq 2 ] && [ "$(wc -l <err.txt)" -eq 1 ] || fail "a bad command: $(cat err.txt)"
timeout 120 "$VPY" -m explorer.search --help >/dev/null || fail "python -m explorer.search --help"

data=()
if [ ! -d /usr/share/datasets/fashion-mnist ]; then  # a tiny learnable stand-in, via --data-dir
  "$VPY" - "$TMP/data" <<'EOF'
import gzip, struct, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1]); out.mkdir()
rng = np.random.default_rng(0)
def write(name, a):
    with gzip.open(out / name, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
for split, n in (("train", 6000), ("t10k", 1000)):
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for c in range(10):
        x[y == c, 2 * c : 2 * c + 2, :] += 150
    write(f"{split}-images-idx3-ubyte.gz", x)
    write(f"{split}-labels-idx1-ubyte.gz", y)
EOF
  data=(--data-dir "$TMP/data")
fi
# Three designs over two rungs: the best of the three is promoted, so the top rung has one.
step "inception-explorer search --trials 3 --rungs 2 --budget smoke ${data[*]}"
timeout 600 inception-explorer search --trials 3 --rungs 2 --budget smoke --device cpu --workers 1 \
  --no-references --study smoke "${data[@]}" >search.txt 2>&1 || fail "search: $(tail -n 20 search.txt)"
[ -f studies/explorer.journal ] || fail "the search wrote no studies/explorer.journal here"
tail -n 6 search.txt

step "inception-explorer export --study smoke --best"
timeout 300 inception-explorer export --study smoke --best -o best.py || fail "export"
timeout 120 "$VPY" - <<'EOF'
import importlib.util, torch
spec = importlib.util.spec_from_file_location("best", "best.py")
best = importlib.util.module_from_spec(spec); spec.loader.exec_module(best)
[name] = [n for n in vars(best) if n.startswith("Trial") and n.endswith("Net")]
out = getattr(best, name)().eval()(torch.zeros(2, 1, 28, 28))
assert out.shape == (2, 10), out.shape
print(f"wheel-smoke: best.py builds {name}, logits {tuple(out.shape)}")
EOF

step "inception-explorer dashboard"
PORT=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
inception-explorer dashboard --study smoke --port "$PORT" --address 127.0.0.1 --no-browser \
  >dashboard.txt 2>&1 &
DASH_PID=$!
healthy=
for _ in $(seq 120); do  # up to 60 s
  kill -0 "$DASH_PID" 2>/dev/null || fail "the dashboard exited: $(tail -n 20 dashboard.txt)"
  if [ "$("$VPY" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$PORT/_stcore/health', timeout=2).read().decode())" 2>/dev/null)" = ok ]; then
    healthy=1
    break
  fi
  sleep 0.5
done
[ -n "$healthy" ] || fail "no health answer on port $PORT in 60 s: $(tail -n 20 dashboard.txt)"
step "dashboard healthy on port $PORT; rendering the installed page"
timeout 180 "$VPY" - <<'EOF'
import sys
from streamlit.testing.v1 import AppTest
from explorer.cli import dashboard_page
sys.argv = [str(dashboard_page()), "--study", "smoke"]
at = AppTest.from_file(str(dashboard_page()), default_timeout=120).run()
assert not at.exception, [e.message for e in at.exception]
assert [t.value for t in at.title] == ["smoke"], [t.value for t in at.title]
print("wheel-smoke: the installed page renders study 'smoke'")
EOF
kill "$DASH_PID"
for _ in $(seq 15); do kill -0 "$DASH_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$DASH_PID" 2>/dev/null && fail "the dashboard did not stop within 15 s of SIGTERM"
DASH_PID=
step "passed"
